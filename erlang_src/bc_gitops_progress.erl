%%% @doc What runs now: the app each running action is about, and its
%%% phase (`status()''s `in_progress').
%%%
%%% Phases are reported from where they happen, into an ETS table that
%%% bc_gitops_sup owns: {@link bc_gitops_action} marks an action's start
%%% (`starting' for a deploy, `upgrading' for an upgrade or a reconfigure,
%%% `stopping' for a remove) and its end; a runtime refines the phase from
%%% inside its callback (the default runtime says `fetching', `building',
%%% then `starting' or `upgrading'); a health gate's process says
%%% `health_wait' while it waits. A write is one `ets:insert/2' in the
%%% process doing the work: nothing calls the reconciler, so nothing can
%%% deadlock on it, and a custom runtime that reports nothing still shows
%%% its actions. An entry whose process died is not shown.
-module(bc_gitops_progress).

-export([new/0, start/2, phase/2, health_wait/3, done/1, list/0]).

-export_type([phase/0, entry/0]).

-define(TABLE, bc_gitops_progress).

-type phase() :: fetching | building | starting | upgrading | stopping | health_wait.
-type entry() :: #{app := atom(), action := atom(), phase := phase(), since := integer()}.

%% @doc Creates the table; the calling process owns it.
-spec new() -> ok.
new() ->
    _ = ets:new(?TABLE, [named_table, public, set, {write_concurrency, true}]),
    ok.

%% @doc `App''s action `Action' starts now, in the calling process.
-spec start(atom(), atom()) -> ok.
start(App, Action) ->
    put_entry(App, Action, first_phase(Action), now_ms()).

%% @doc The running action of `App' is now in `Phase' (called by a runtime
%% from its callback). An app with no action under way is left alone.
-spec phase(atom(), phase()) -> ok.
phase(App, Phase) ->
    case lookup(App) of
        {Action, _Phase, _Since, _Pid} -> put_entry(App, Action, Phase, now_ms());
        none -> ok
    end.

%% @doc `App' waits for its health gate (the calling process) after
%% `Action', since `Since' (system time, ms).
-spec health_wait(atom(), atom(), integer()) -> ok.
health_wait(App, Action, Since) ->
    put_entry(App, Action, health_wait, Since).

%% @doc `App''s action is over.
-spec done(atom()) -> ok.
done(App) ->
    try ets:delete(?TABLE, App) catch error:badarg -> true end,
    ok.

%% @doc What runs now, oldest first: `[#{app, action, phase, since}]',
%% `since' in system time (ms). Empty when nothing runs.
-spec list() -> [entry()].
list() ->
    Rows = try ets:tab2list(?TABLE) catch error:badarg -> [] end,
    lists:sort(fun(#{since := A}, #{since := B}) -> A =< B end,
               [#{app => App, action => Action, phase => Phase, since => Since}
                || {App, Action, Phase, Since, Pid} <- Rows, is_process_alive(Pid)]).

-spec first_phase(atom()) -> phase().
first_phase(upgrade) -> upgrading;
first_phase(reconfigure) -> upgrading;
first_phase(remove) -> stopping;
first_phase(_Deploy) -> starting.

-spec lookup(atom()) -> {atom(), phase(), integer(), pid()} | none.
lookup(App) ->
    try ets:lookup(?TABLE, App) of
        [{App, Action, Phase, Since, Pid}] -> {Action, Phase, Since, Pid};
        [] -> none
    catch
        error:badarg -> none
    end.

-spec put_entry(atom(), atom(), phase(), integer()) -> ok.
put_entry(App, Action, Phase, Since) ->
    try ets:insert(?TABLE, {App, Action, Phase, Since, self()}) catch error:badarg -> true end,
    ok.

-spec now_ms() -> integer().
now_ms() ->
    erlang:system_time(millisecond).
