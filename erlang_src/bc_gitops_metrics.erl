%%% @doc Prometheus metrics, counted by bc_gitops itself: they need no
%%% `telemetry' package.
%%%
%%% Every event bc_gitops emits passes through {@link observe/3} (called
%%% by {@link bc_gitops_telemetry:execute/3} in the emitting process):
%%% counters and histograms are `ets:update_counter/4' on a public table
%%% that bc_gitops_sup owns, so counting never waits on a process. What is
%%% a state rather than a count (apps by status and health, the node's
%%% status, what runs now) is read when `/metrics' is scraped, and given
%%% to {@link render/1}.
%%%
%%% A rollback after a failed health gate counts once in
%%% `bc_gitops_upgrades_total{path="rolled_back"}'; the move back to the
%%% old version is itself an upgrade, counted by the path it took.
-module(bc_gitops_metrics).

-include("bc_gitops.hrl").

-export([new/0, observe/3, render/1]).

-export_type([snapshot/0]).

-define(TABLE, bc_gitops_metrics).
-define(PREFIX, "bc_gitops_").

%% What /metrics reads at scrape time.
-type snapshot() :: #{status := map() | undefined,
                      current := #{atom() => #app_state{}},
                      in_progress := non_neg_integer()}.

-define(RECONCILE_BUCKETS, [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                            60.0, 120.0, 300.0, 600.0]).
-define(FETCH_BUCKETS, [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0, 60.0]).

-define(RESULTS, [synced, out_of_sync, error]).
-define(PATHS, [hot, restart, rolled_back]).
-define(SOURCES, [github, gitlab, generic]).
-define(HOOK_RESULTS, [triggered, ignored, unauthorized, bad_request, too_large]).
-define(STATUSES, [idle, reconciling, synced, out_of_sync, degraded, error]).

%% @doc Creates the table, every counter at zero; the calling process owns it.
-spec new() -> ok.
new() ->
    _ = ets:new(?TABLE, [named_table, public, set, {write_concurrency, true}]),
    true = ets:insert(?TABLE, [{{reconciles, R}, 0} || R <- ?RESULTS]
                              ++ [{{upgrades, P}, 0} || P <- ?PATHS]
                              ++ [{{webhooks, S, R}, 0} || S <- ?SOURCES, R <- ?HOOK_RESULTS]),
    ok.

%% @doc Counts what `Event' says; any other event is ignored. Never
%% raises (without the table, as outside the application, it does nothing).
-spec observe([atom(), ...], map(), map()) -> ok.
observe(Event, Measurements, Meta) ->
    try count(Event, Measurements, Meta)
    catch error:badarg -> ok
    end.

-spec count([atom(), ...], map(), map()) -> ok.
count([bc_gitops, reconcile, stop], #{duration := D}, #{status := Status}) ->
    true = ets:insert(?TABLE, {last_success, erlang:system_time(millisecond)}),
    bump({reconciles, Status}),
    histogram(reconcile_duration, ?RECONCILE_BUCKETS, D);
count([bc_gitops, reconcile, error], #{duration := D}, _Meta) ->
    bump({reconciles, error}),
    histogram(reconcile_duration, ?RECONCILE_BUCKETS, D);
count([bc_gitops, git, pull], #{duration := D}, _Meta) ->
    histogram(git_fetch_duration, ?FETCH_BUCKETS, D);
count([bc_gitops, upgrade, stop], _, #{result := ok, path := Path}) ->
    bump({upgrades, Path});
count([bc_gitops, upgrade, stop], _, #{path := rolled_back}) ->
    bump({upgrades, rolled_back});
count([bc_gitops, rollback, stop], _, _Meta) ->
    bump({upgrades, rolled_back});
count([bc_gitops, webhook, received], _, #{source := Source, result := Result}) ->
    bump({webhooks, Source, Result});
count(_Event, _Measurements, _Meta) ->
    ok.

-spec bump(tuple()) -> ok.
bump(Key) ->
    _ = ets:update_counter(?TABLE, Key, 1, {Key, 0}),
    ok.

%% One row per histogram: {Key, Count, Sum (native units), one count per
%% bucket, then +Inf}; a sample is one atomic update of three of them.
-spec histogram(atom(), [float()], integer()) -> ok.
histogram(Name, Buckets, Native) ->
    Seconds = Native / erlang:convert_time_unit(1, second, native),
    Index = length(lists:takewhile(fun(Le) -> Seconds > Le end, Buckets)),
    Default = list_to_tuple([{hist, Name}, 0, 0 | [0 || _ <- [inf | Buckets]]]),
    _ = ets:update_counter(?TABLE, {hist, Name}, [{2, 1}, {3, max(0, Native)}, {4 + Index, 1}],
                           Default),
    ok.

%% @doc The metrics in Prometheus' text format (version 0.0.4).
-spec render(snapshot()) -> iodata().
render(#{status := Status, current := Current, in_progress := Running}) ->
    Rows = try ets:tab2list(?TABLE) catch error:badarg -> [] end,
    Counts = maps:from_list([{K, V} || {K, V} <- Rows]),
    Hists = maps:from_list([{Name, Row} || Row <- Rows, {hist, Name} <- [element(1, Row)]]),
    Apps = maps:values(Current),
    ByStatus = lists:foldl(fun(#app_state{status = S, health = H}, Acc) ->
                                   maps:update_with({S, H}, fun(N) -> N + 1 end, 1, Acc)
                           end, #{}, Apps),
    NodeStatus = case Status of
                     #{status := S} -> S;
                     _ -> undefined
                 end,
    [histogram_text("reconcile_duration_seconds",
                    "How long a reconcile took, from its start to its end.",
                    ?RECONCILE_BUCKETS, maps:get(reconcile_duration, Hists, undefined)),
     family("reconciles_total", counter, "Reconciles, by how they ended.",
            [{[{result, R}], maps:get({reconciles, R}, Counts, 0)} || R <- ?RESULTS]),
     family("apps", gauge, "Managed apps, by status and health.",
            [{[{status, S}, {health, H}], N} || {{S, H}, N} <- lists:sort(maps:to_list(ByStatus))]),
     family("app_info", gauge, "One series per managed app: the version it runs.",
            [{[{app, A}, {version, V}], 1}
             || #app_state{name = A, version = V} <- lists:keysort(#app_state.name, Apps)]),
     family("last_success_timestamp_seconds", gauge,
            "When the last reconcile that ran through (synced or out_of_sync) ended, Unix time.",
            [{[], maps:get(last_success, Counts, 0) / 1000} || maps:is_key(last_success, Counts)]),
     family("upgrades_total", counter, "Upgrades, by the path they took.",
            [{[{path, P}], maps:get({upgrades, P}, Counts, 0)} || P <- ?PATHS]),
     histogram_text("git_fetch_duration_seconds",
                    "How long a fetch of the gitops repository took.",
                    ?FETCH_BUCKETS, maps:get(git_fetch_duration, Hists, undefined)),
     family("webhooks_total", counter, "Webhooks received, by source and result.",
            [{[{source, S}, {result, R}], N}
             || {{webhooks, S, R}, N} <- lists:sort(maps:to_list(Counts))]),
     family("status", gauge, "The node's status: 1 for the one it is in.",
            [{[{status, S}], case S of NodeStatus -> 1; _ -> 0 end} || S <- ?STATUSES]),
     family("in_progress", gauge, "Actions running now (status()'s in_progress).",
            [{[], Running}])].

-spec family(string(), counter | gauge, string(), [{[{atom(), term()}], number()}]) -> iodata().
family(Name, Type, Help, Samples) ->
    Full = [?PREFIX, Name],
    [header(Full, Type, Help) | [sample(Full, Labels, V) || {Labels, V} <- Samples]].

-spec header(iodata(), atom(), string()) -> iodata().
header(Name, Type, Help) ->
    ["# HELP ", Name, " ", Help, "\n# TYPE ", Name, " ", atom_to_list(Type), "\n"].

-spec histogram_text(string(), string(), [float()], tuple() | undefined) -> iodata().
histogram_text(Name, Help, Buckets, undefined) ->
    histogram_text(Name, Help, Buckets,
                   list_to_tuple([x, 0, 0 | [0 || _ <- [inf | Buckets]]]));
histogram_text(Name, Help, Buckets, Row) ->
    Full = [?PREFIX, Name],
    [_, Count, Sum | PerBucket] = tuple_to_list(Row),
    Cumulative = tl(lists:reverse(lists:foldl(fun(N, [Acc | _] = All) -> [Acc + N | All] end,
                                              [0], PerBucket))),
    Les = [float_to_binary(B, [short]) || B <- Buckets] ++ [<<"+Inf">>],
    [header(Full, histogram, Help),
     [sample([Full, "_bucket"], [{le, Le}], N) || {Le, N} <- lists:zip(Les, Cumulative)],
     sample([Full, "_sum"], [], Sum / erlang:convert_time_unit(1, second, native)),
     sample([Full, "_count"], [], Count)].

-spec sample(iodata(), [{atom(), term()}], number()) -> iodata().
sample(Name, [], Value) ->
    [Name, " ", number(Value), "\n"];
sample(Name, Labels, Value) ->
    [Name, "{", lists:join(",", [[atom_to_list(K), "=\"", label(V), "\""] || {K, V} <- Labels]),
     "} ", number(Value), "\n"].

-spec number(number()) -> binary().
number(N) when is_integer(N) -> integer_to_binary(N);
number(F) -> float_to_binary(F, [short]).

%% A label value, escaped as the text format wants.
-spec label(term()) -> binary().
label(V) ->
    unicode:characters_to_binary(
      [case C of
           $\\ -> "\\\\";
           $" -> "\\\"";
           $\n -> "\\n";
           _ -> C
       end || C <- unicode:characters_to_list(bc_gitops_json:text(V))]).
