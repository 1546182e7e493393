-module(bc_gitops_semver_tests).

-include_lib("eunit/include/eunit.hrl").

v(B) ->
    {ok, V} = bc_gitops_semver:parse_version(B),
    V.

m(Version, Req) ->
    {ok, R} = bc_gitops_semver:parse_requirement(Req),
    bc_gitops_semver:match(v(Version), R).

parse_version_test() ->
    ?assertMatch({ok, _}, bc_gitops_semver:parse_version(<<"1.2.3">>)),
    ?assertMatch({ok, _}, bc_gitops_semver:parse_version(<<"1.2.3-rc.1+build.5">>)),
    ?assertEqual(error, bc_gitops_semver:parse_version(<<"1.2">>)),
    ?assertEqual(error, bc_gitops_semver:parse_version(<<"01.2.3">>)),
    ?assertEqual(error, bc_gitops_semver:parse_version(<<"1.2.3-">>)),
    ?assertEqual(error, bc_gitops_semver:parse_version(<<"1.2.3-a..b">>)),
    ?assertEqual(error, bc_gitops_semver:parse_version(<<"a.b.c">>)),
    ?assertEqual(error, bc_gitops_semver:parse_version("1.2.3")).

precedence_test() ->
    %% The ordering example of semver 2.0.0, section 11.
    Ordered = [<<"1.0.0-alpha">>, <<"1.0.0-alpha.1">>, <<"1.0.0-alpha.beta">>,
               <<"1.0.0-beta">>, <<"1.0.0-beta.2">>, <<"1.0.0-beta.11">>,
               <<"1.0.0-rc.1">>, <<"1.0.0">>, <<"1.0.1">>, <<"1.1.0">>, <<"2.0.0">>],
    Pairs = lists:zip(lists:droplast(Ordered), tl(Ordered)),
    [?assertEqual(lt, bc_gitops_semver:compare(v(A), v(B))) || {A, B} <- Pairs],
    [?assertEqual(gt, bc_gitops_semver:compare(v(B), v(A))) || {A, B} <- Pairs],
    ?assertEqual(eq, bc_gitops_semver:compare(v(<<"1.0.0+a">>), v(<<"1.0.0+b">>))).

pessimistic_test() ->
    ?assert(m(<<"1.2.0">>, <<"~> 1.2">>)),
    ?assert(m(<<"1.9.9">>, <<"~> 1.2">>)),
    ?assertNot(m(<<"2.0.0">>, <<"~> 1.2">>)),
    ?assertNot(m(<<"1.1.9">>, <<"~> 1.2">>)),
    ?assert(m(<<"1.2.3">>, <<"~> 1.2.3">>)),
    ?assert(m(<<"1.2.9">>, <<"~> 1.2.3">>)),
    ?assertNot(m(<<"1.3.0">>, <<"~> 1.2.3">>)),
    ?assertNot(m(<<"1.2.2">>, <<"~> 1.2.3">>)).

operators_test() ->
    ?assert(m(<<"1.5.0">>, <<">= 1.0.0 and < 2.0.0">>)),
    ?assertNot(m(<<"2.0.0">>, <<">= 1.0.0 and < 2.0.0">>)),
    ?assert(m(<<"1.0.0">>, <<"== 1.0.0">>)),
    ?assert(m(<<"1.0.0">>, <<"1.0.0">>)),
    ?assertNot(m(<<"1.0.1">>, <<"1.0.0">>)),
    ?assert(m(<<"3.0.0">>, <<"~> 1.0 or ~> 3.0">>)),
    ?assertNot(m(<<"2.0.0">>, <<"~> 1.0 or ~> 3.0">>)),
    ?assert(m(<<"1.0.1">>, <<"!= 1.0.0">>)),
    ?assert(m(<<"1.0.0">>, <<"<= 1.0.0">>)),
    ?assert(m(<<"1.0.1">>, <<"> 1.0.0">>)),
    ?assertEqual(error, bc_gitops_semver:parse_requirement(<<">= 1.0">>)),
    ?assertEqual(error, bc_gitops_semver:parse_requirement(<<"~> 1">>)),
    ?assertEqual(error, bc_gitops_semver:parse_requirement(<<"and 1.0.0">>)),
    ?assertEqual(error, bc_gitops_semver:parse_requirement(<<"=> 1.0.0">>)).

pre_release_test() ->
    ?assertNot(m(<<"1.3.0-rc.1">>, <<"~> 1.2">>)),
    ?assertNot(m(<<"2.0.0-rc.1">>, <<"~> 1.2">>)),
    ?assert(m(<<"1.2.0-rc.2">>, <<"~> 1.2.0-rc.1">>)),
    ?assert(m(<<"1.0.0-beta">>, <<"== 1.0.0-beta">>)).

highest_matching_test() ->
    Vs = [<<"0.1.0">>, <<"0.2.0">>, <<"0.2.5">>, <<"0.3.0-rc.1">>, <<"1.0.0">>, <<"junk">>],
    ?assertEqual({ok, <<"0.2.5">>}, bc_gitops_semver:highest_matching(Vs, [<<"~> 0.2">>])),
    ?assertEqual({ok, <<"1.0.0">>}, bc_gitops_semver:highest_matching(Vs, [])),
    ?assertEqual({ok, <<"0.2.0">>},
                 bc_gitops_semver:highest_matching(Vs, [<<"~> 0.2">>, <<"< 0.2.5">>])),
    ?assertEqual(none, bc_gitops_semver:highest_matching(Vs, [<<"~> 2.0">>])),
    ?assertEqual(none, bc_gitops_semver:highest_matching(Vs, [<<"~> 0.1.0">>, <<"~> 1.0">>])),
    ?assertEqual({ok, <<"0.3.0-rc.1">>},
                 bc_gitops_semver:highest_matching(Vs, [<<"~> 0.3.0-rc.0">>])),
    ?assertEqual({error, {bad_requirement, <<"~>">>}},
                 bc_gitops_semver:highest_matching(Vs, [<<"~>">>])).
