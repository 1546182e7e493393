%%% @doc Where an app runs in a cluster: its spec's `placement' is `all'
%%% (the default) or a list of node-name patterns, in which `*' matches any
%%% run of characters (none included) and every other character itself:
%%% `<<"web*@*">>' matches `'web1@host-a''. An app runs on the members
%%% whose name matches one of its patterns, and leaves a node when no
%%% pattern matches it any more.
-module(bc_gitops_placement).

-export([matches/2]).

-export_type([placement/0]).

-type placement() :: all | [binary()].

%% @doc Whether `Node' is one of `Placement''s nodes.
-spec matches(placement(), node()) -> boolean().
matches(all, _Node) ->
    true;
matches(Patterns, Node) when is_list(Patterns) ->
    Name = atom_to_binary(Node, utf8),
    lists:any(fun(P) -> glob(P, Name) end, Patterns).

%% `*' against any run: the classic greedy match with one backtrack point
%% (the last star), linear in practice and never exponential.
-spec glob(binary(), binary()) -> boolean().
glob(Pattern, Name) ->
    glob(Pattern, Name, none).

-spec glob(binary(), binary(), none | {binary(), binary()}) -> boolean().
glob(<<$*, P/binary>>, N, _Back) ->
    glob(P, N, {P, N});
glob(<<C, P/binary>>, <<C, N/binary>>, Back) ->
    glob(P, N, Back);
glob(<<>>, <<>>, _Back) ->
    true;
glob(_P, _N, {StarP, <<_, Rest/binary>>}) ->
    %% The last star takes one more character.
    glob(StarP, Rest, {StarP, Rest});
glob(_P, _N, _Back) ->
    false.
