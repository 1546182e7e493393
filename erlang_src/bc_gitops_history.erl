%%% @doc The history of changes made to the node's apps: the latest 200,
%%% newest first, as `argocd app history' and `flux events' show them.
%%%
%%% An entry is a map: `at' (system time, ms, when the change started),
%%% `commit' (the gitops commit it came from; `undefined' for a manual
%%% one), `app', `action' (`deploy', `upgrade', `reconfigure', `remove',
%%% `rollback' or `repair'), `from' and `to' (versions), `result' (`ok' or
%%% `{error, Reason}': for a change behind a health gate, the gate's
%%% verdict), `path' (`hot', `restart' or `rolled_back' for upgrades and
%%% rollbacks, else `undefined') and `duration_ms' (health gate
%%% included). In cluster mode an entry also names its `node'.
%%%
%%% Beside the entries it keeps, per app, its last successful change and
%%% the spec that ran before it: what {@link bc_gitops:rollback/1} goes
%%% back to. Entries are made in the reconciler's worker and sent to the
%%% reconciler ({@link record/3}), which keeps the history and writes it
%%% to `local_path/history.bin' after each job, as atomically and checked
%%% as `state.bin' ({@link bc_gitops_store}).
-module(bc_gitops_history).

-include("bc_gitops.hrl").

-export([new/0, load/1, save/2, add/3, entries/2, last_change/2, limit/0]).
-export([entry/4, record/3, change/3, before/3, kind/1]).

-export_type([history/0, entry/0, facts/0, change/0]).

-define(LIMIT, 200).

-type action() :: deploy | upgrade | reconfigure | remove | rollback | repair.

-type entry() :: #{at := integer(), commit := binary() | undefined, app := atom(),
                   action := action(), from := binary() | undefined,
                   to := binary() | undefined, result := ok | {error, term()},
                   path := hot | restart | rolled_back | undefined,
                   duration_ms := non_neg_integer(), node => node()}.

%% How a runtime call went: when it started (system and monotonic time,
%% ms), how long it took, and which path an upgrade took.
-type facts() :: #{at := integer(), start := integer(), duration_ms := non_neg_integer(),
                   path := hot | restart | rolled_back | undefined}.

%% An app's last successful change: what it was, the spec that ran
%% before it (`undefined' after a first deploy) and the one after.
-type change() :: #{action := action(), before := #app_spec{} | undefined,
                    'after' := #app_spec{}}.

-type history() :: #{entries := [entry()], changes := #{atom() => change()},
                     %% Whether it changed since it was last written.
                     dirty := boolean()}.

%% @doc How many entries are kept.
-spec limit() -> pos_integer().
limit() -> ?LIMIT.

-spec new() -> history().
new() -> #{entries => [], changes => #{}, dirty => false}.

%% @doc The history kept under `local_path'; an empty one when there is
%% none or it cannot be trusted.
-spec load(bc_gitops_config:config()) -> history().
load(Config) ->
    case bc_gitops_store:read(file(Config)) of
        {ok, #{entries := Entries, changes := Changes}} when is_list(Entries), is_map(Changes) ->
            #{entries => Entries, changes => Changes, dirty => false};
        _ ->
            new()
    end.

%% @doc Writes the history when it changed since it was last written.
-spec save(bc_gitops_config:config(), history()) -> history().
save(_Config, #{dirty := false} = H) ->
    H;
save(Config, #{entries := Entries, changes := Changes} = H) ->
    case bc_gitops_store:write(file(Config), #{entries => Entries, changes => Changes}) of
        ok -> H#{dirty := false};
        {error, _} -> H
    end.

-spec file(bc_gitops_config:config()) -> file:filename().
file(#{local_path := Base}) -> filename:join(Base, "history.bin").

%% @doc Adds `Entry'; `Change' says what it does to the app's last
%% change: `{Before, After}' replaces it, `forget' drops it (a removal),
%% `keep' leaves it (a failure, a repair, a rollback after a failed
%% health gate).
-spec add(entry(), {#app_spec{} | undefined, #app_spec{}} | forget | keep, history()) ->
    history().
add(#{app := App, action := Action} = Entry, Change, #{entries := Entries, changes := Changes} = H) ->
    Changes1 = case Change of
                   keep -> Changes;
                   forget -> maps:remove(App, Changes);
                   {Before, After} -> Changes#{App => #{action => Action, before => Before,
                                                        'after' => After}}
               end,
    H#{entries := lists:sublist([Entry | Entries], ?LIMIT), changes := Changes1, dirty := true}.

%% @doc The entries, newest first: all, or those of one app.
-spec entries(all | atom(), history()) -> [entry()].
entries(all, #{entries := Entries}) -> Entries;
entries(App, #{entries := Entries}) -> [E || #{app := A} = E <- Entries, A =:= App].

-spec last_change(atom(), history()) -> change() | none.
last_change(App, #{changes := Changes}) -> maps:get(App, Changes, none).

%% @doc The entry for `Action', run with `Result'. `Ctx' gives the
%% `commit', the version the app ran before (`from', for a removal),
%% the `action' when it is not the plan's (`rollback'), and `node' in
%% cluster mode.
-spec entry(bc_gitops_plan:action(), ok | {error, term()}, facts(), map()) -> entry().
entry(Action, Result, #{at := At, start := Start, path := Path}, Ctx) ->
    App = bc_gitops_action:app(Action),
    {From, To} = versions(Action, maps:get(from, Ctx, undefined)),
    Entry = #{at => At, commit => maps:get(commit, Ctx, undefined), app => App,
              action => maps:get(action, Ctx, kind(Action)), from => From, to => To,
              result => Result, path => Path,
              duration_ms => max(0, erlang:monotonic_time(millisecond) - Start)},
    case Ctx of
        #{node := Node} -> Entry#{node => Node};
        _ -> Entry
    end.

%% @doc What a planned action is called in the history.
-spec kind(bc_gitops_plan:action()) -> action().
kind({deploy, _}) -> deploy;
kind({redeploy, _, unhealthy}) -> deploy;
kind({redeploy, _, _}) -> repair;
kind({upgrade, _, _}) -> upgrade;
kind({reconfigure, _}) -> reconfigure;
kind({remove, _}) -> remove.

-spec versions(bc_gitops_plan:action(), binary() | undefined) ->
    {binary() | undefined, binary() | undefined}.
versions({deploy, #app_spec{version = V}}, From) -> {From, V};
versions({redeploy, #app_spec{version = V}, unhealthy}, From) -> {From, V};
versions({redeploy, #app_spec{version = V}, _}, _From) -> {V, V};
versions({upgrade, #app_spec{version = V}, From}, _) -> {From, V};
versions({reconfigure, #app_spec{version = V}}, _) -> {V, V};
versions({remove, _}, From) -> {From, undefined}.

%% @doc What a change does to the app's last change (see {@link add/3}):
%% `State' is the app as it ran before (`undefined' if it did not run),
%% `Previous' the spec it was deployed from, if known.
-spec change(bc_gitops_plan:action(), ok | {error, term()},
             {#app_state{} | undefined, #app_spec{} | undefined}) ->
    {#app_spec{} | undefined, #app_spec{}} | forget | keep.
change(_Action, {error, _}, _Before) -> keep;
change({remove, _}, ok, _Before) -> forget;
change({redeploy, _, Why}, ok, _Before) when Why =/= unhealthy -> keep;
change({deploy, Spec}, ok, _Before) -> {undefined, Spec};
change({redeploy, Spec, unhealthy}, ok, _Before) -> {undefined, Spec};
change(Action, ok, {State, Previous}) ->
    Spec = element(2, Action),
    {before(Spec, State, Previous), Spec}.

%% @doc The spec that ran before a change to `Spec': the one it was
%% deployed from (else `Spec') at the version, env and dependencies the
%% app ran with; `undefined' when it did not run.
-spec before(#app_spec{}, #app_state{} | undefined, #app_spec{} | undefined) ->
    #app_spec{} | undefined.
before(_Spec, undefined, _Previous) ->
    undefined;
before(Spec, #app_state{version = V, env = Env, depends_on = Deps}, Previous) ->
    Base = case Previous of
               #app_spec{} -> Previous;
               undefined -> Spec
           end,
    Base#app_spec{version = V, env = Env, depends_on = Deps}.

%% @doc Sends an entry to the reconciler `Sink', which keeps it.
-spec record(pid() | undefined, entry(), {#app_spec{} | undefined, #app_spec{}} | forget | keep) ->
    ok.
record(undefined, _Entry, _Change) ->
    ok;
record(Sink, Entry, Change) ->
    Sink ! {?MODULE, Entry, Change},
    ok.
