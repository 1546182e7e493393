%%% @doc Semantic versions (semver 2.0.0) and Elixir/hex version
%%% requirements, for the `hex' source type ({@link bc_gitops_hex}).
%%%
%%% Versions are `MAJOR.MINOR.PATCH', optionally `-PRE' (dot-separated
%%% identifiers: numeric ones compare numerically and sort below
%%% alphanumeric ones, which compare in ASCII order; a longer list wins when
%%% one is a prefix of the other; any pre-release sorts below the release)
%%% and `+BUILD' (ignored in comparisons). No leading zeros in numbers.
%%%
%%% Requirements: conditions `OP VERSION' with `OP' one of `~>', `>=', `<=',
%%% `>', `<', `==', `!=' or none (meaning `=='), joined by `and', the
%%% conjunctions joined by `or'. `~> X.Y' means `>= X.Y.0 and < (X+1).0.0';
%%% `~> X.Y.Z' means `>= X.Y.Z and < X.(Y+1).0'; only `~>' accepts a version
%%% of two parts. As in hex, a pre-release version matches a requirement only
%%% if the requirement itself names a pre-release.
-module(bc_gitops_semver).

-export([parse_version/1, parse_requirement/1, compare/2, match/2, highest_matching/2]).

-export_type([version/0, requirement/0]).

-opaque version() :: {non_neg_integer(), non_neg_integer(), non_neg_integer(),
                      [non_neg_integer() | binary()]}.
-type op() :: gte | lte | gt | lt | eq | neq.
-opaque requirement() :: {AllowPre :: boolean(), [[{op(), version()}]]}.

%% @doc Parses a version.
-spec parse_version(binary()) -> {ok, version()} | error.
parse_version(Bin) when is_binary(Bin) ->
    try {ok, full(Bin)} catch throw:bad -> error end;
parse_version(_) ->
    error.

%% @doc Parses a requirement.
-spec parse_requirement(binary()) -> {ok, requirement()} | error.
parse_requirement(Bin) when is_binary(Bin) ->
    try
        Conds = [[condition(string:trim(C)) || C <- split_word(Or, <<"and">>)]
                 || Or <- split_word(Bin, <<"or">>)],
        %% Only the versions written in the requirement count, not the
        %% upper bounds `~>' adds.
        AllowPre = lists:any(fun([{_, {_, _, _, Pre}} | _]) -> Pre =/= [] end,
                             lists:append(Conds)),
        Clauses = [lists:append(C) || C <- Conds],
        {ok, {AllowPre, Clauses}}
    catch
        throw:bad -> error
    end;
parse_requirement(_) ->
    error.

%% @doc Compares two versions (`lt', `eq' or `gt'); build metadata is
%% ignored.
-spec compare(version(), version()) -> lt | eq | gt.
compare(A, B) ->
    KA = key(A),
    KB = key(B),
    if KA < KB -> lt;
       KA > KB -> gt;
       true -> eq
    end.

%% @doc Whether `Version' satisfies `Requirement'.
-spec match(version(), requirement()) -> boolean().
match({_, _, _, Pre} = V, {AllowPre, Clauses}) ->
    (Pre =:= [] orelse AllowPre)
        andalso lists:any(fun(Conds) -> lists:all(fun(C) -> holds(V, C) end, Conds) end,
                          Clauses).

%% @doc The highest of `Versions' that satisfies every one of
%% `Requirements'. Strings that are not versions are ignored.
-spec highest_matching([binary()], [binary()]) ->
          {ok, binary()} | none | {error, {bad_requirement, binary()}}.
highest_matching(Versions, Requirements) ->
    Parsed = [{R, parse_requirement(R)} || R <- Requirements],
    case [R || {R, error} <- Parsed] of
        [Bad | _] ->
            {error, {bad_requirement, Bad}};
        [] ->
            Reqs = [Req || {_, {ok, Req}} <- Parsed],
            Ok = [{key(V), Bin} || Bin <- Versions, {ok, V} <- [parse_version(Bin)],
                                   lists:all(fun(Req) -> match(V, Req) end, Reqs)],
            case lists:sort(Ok) of
                [] -> none;
                Sorted -> {ok, element(2, lists:last(Sorted))}
            end
    end.

%%====================================================================
%% Internal functions
%%====================================================================

%% A sort key: a release sorts above its pre-releases, numeric identifiers
%% below alphanumeric ones.
-spec key(version()) -> tuple().
key({Ma, Mi, Pa, []}) ->
    {Ma, Mi, Pa, 1, []};
key({Ma, Mi, Pa, Pre}) ->
    {Ma, Mi, Pa, 0, [if is_integer(I) -> {0, I}; true -> {1, I} end || I <- Pre]}.

-spec holds(version(), {op(), version()}) -> boolean().
holds(V, {Op, W}) ->
    C = compare(V, W),
    case Op of
        eq -> C =:= eq;
        neq -> C =/= eq;
        gt -> C =:= gt;
        gte -> C =/= lt;
        lt -> C =:= lt;
        lte -> C =/= gt
    end.

%% Splits on a whole word surrounded by whitespace.
-spec split_word(binary(), binary()) -> [binary()].
split_word(Bin, Word) ->
    Parts = re:split(Bin, <<"\\s+", Word/binary, "\\s+">>, [{return, binary}]),
    [case string:trim(P) of <<>> -> throw(bad); T -> T end || P <- Parts].

-spec condition(binary()) -> [{op(), version()}].
condition(<<"~>", Rest/binary>>) -> pessimistic(string:trim(Rest));
condition(<<">=", Rest/binary>>) -> [{gte, full(Rest)}];
condition(<<"<=", Rest/binary>>) -> [{lte, full(Rest)}];
condition(<<"==", Rest/binary>>) -> [{eq, full(Rest)}];
condition(<<"!=", Rest/binary>>) -> [{neq, full(Rest)}];
condition(<<">", Rest/binary>>) -> [{gt, full(Rest)}];
condition(<<"<", Rest/binary>>) -> [{lt, full(Rest)}];
condition(Rest) -> [{eq, full(Rest)}].

-spec full(binary()) -> version().
full(Bin) ->
    case parts(string:trim(Bin)) of
        {[Ma, Mi, Pa], Pre} -> {Ma, Mi, Pa, Pre};
        _ -> throw(bad)
    end.

%% `~> X.Y' and `~> X.Y.Z'. The upper bound is the lowest pre-release of
%% the next version (`-0'), so no pre-release of it matches either.
-spec pessimistic(binary()) -> [{op(), version()}].
pessimistic(Bin) ->
    case parts(Bin) of
        {[Ma, Mi], Pre} -> [{gte, {Ma, Mi, 0, Pre}}, {lt, {Ma + 1, 0, 0, [0]}}];
        {[Ma, Mi, Pa], Pre} -> [{gte, {Ma, Mi, Pa, Pre}}, {lt, {Ma, Mi + 1, 0, [0]}}];
        _ -> throw(bad)
    end.

%% The numeric parts and the pre-release of a version; build metadata is
%% checked and dropped.
-spec parts(binary()) -> {[non_neg_integer()], [non_neg_integer() | binary()]}.
parts(Bin) ->
    Main = case binary:split(Bin, <<"+">>) of
               [M, B] -> _ = ident_list(B, build), M;
               [M] -> M
           end,
    {Core, Pre} = case binary:split(Main, <<"-">>) of
                      [C, P] -> {C, ident_list(P, pre)};
                      [C] -> {C, []}
                  end,
    {[num(N) || N <- binary:split(Core, <<".">>, [global])], Pre}.

-spec num(binary()) -> non_neg_integer().
num(<<"0">>) -> 0;
num(<<C, _/binary>> = B) when C >= $1, C =< $9 ->
    case re:run(B, <<"^[0-9]+$">>) of
        {match, _} -> binary_to_integer(B);
        nomatch -> throw(bad)
    end;
num(_) -> throw(bad).

-spec ident_list(binary(), pre | build) -> [non_neg_integer() | binary()].
ident_list(Bin, Kind) ->
    [ident(I, Kind) || I <- binary:split(Bin, <<".">>, [global])].

-spec ident(binary(), pre | build) -> non_neg_integer() | binary().
ident(I, Kind) ->
    case re:run(I, <<"^[0-9A-Za-z-]+$">>) of
        nomatch -> throw(bad);
        _ when Kind =:= build -> I;
        _ ->
            case re:run(I, <<"^[0-9]+$">>) of
                {match, _} -> num(I);
                nomatch -> I
            end
    end.
