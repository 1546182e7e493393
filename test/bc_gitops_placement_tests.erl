-module(bc_gitops_placement_tests).

-include_lib("eunit/include/eunit.hrl").

all_matches_every_node_test() ->
    ?assert(bc_gitops_placement:matches(all, 'a@b')).

patterns_test_() ->
    Cases = [{<<"web*@*">>, 'web1@host', true},
             {<<"web*@*">>, 'web@host', true},
             {<<"web*@*">>, 'db1@host', false},
             {<<"web*@*">>, 'aweb1@host', false},
             {<<"*@h1">>, 'x@h1', true},
             {<<"*@h1">>, 'x@h12', false},
             {<<"a*b*c">>, 'axxbyyc', true},
             {<<"a*b*c">>, 'axxbyy', false},
             %% The last star backtracks over a partial match.
             {<<"*ab">>, 'aab', true},
             {<<"*a*a*a*a*b">>, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', false},
             {<<"exact@host">>, 'exact@host', true},
             {<<"exact@host">>, 'exact@hosts', false},
             {<<"*">>, 'anything@at_all', true},
             {<<"**">>, 'x@y', true}],
    [{iolist_to_binary([P, " ~ ", atom_to_list(N)]),
      ?_assertEqual(Want, bc_gitops_placement:matches([P], N))} || {P, N, Want} <- Cases].

any_pattern_of_the_list_test() ->
    ?assert(bc_gitops_placement:matches([<<"db*@*">>, <<"web*@*">>], 'web2@h')),
    ?assertNot(bc_gitops_placement:matches([<<"db*@*">>, <<"web*@*">>], 'cache@h')).
