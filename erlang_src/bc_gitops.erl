%%% @doc The public API of bc_gitops.
%%%
%%% `status/0' always answers at once: reconciles, dry runs and manual
%%% actions run in a worker process of the reconciler, one at a time, and
%%% the calls that wait for them (`reconcile/0', `plan/0', `deploy/1',
%%% `remove/1', `upgrade/2') wait in the caller, not in the reconciler.
%%%
%%% Status values:
%%% <ul>
%%% <li>`idle': no `repo_url' is configured;</li>
%%% <li>`reconciling': a reconcile is running now;</li>
%%% <li>`synced': the last reconcile applied everything and every managed
%%%     app runs (and is healthy);</li>
%%% <li>`out_of_sync': the repository asks for something the node does not
%%%     run: an invalid spec, a blocked app, a failed or backed-off action
%%%     (also before the first reconcile completes);</li>
%%% <li>`degraded': everything was applied, but a managed app is not
%%%     running or not healthy;</li>
%%% <li>`error': the last reconcile could not run at all (git, apps
%%%     directory, runtime); the apps keep running as they were.</li>
%%% </ul>
%%%
%%% Manual `deploy/1', `remove/1' and `upgrade/2' act on the node directly;
%%% the next reconcile brings the node back to what git says, as GitOps
%%% wants. Use `suspend/0' to keep a manual change for a while, or
%%% `pin/1' to keep one app where it is until git changes its spec.
%%% `rollback/1' takes an app back to what ran before its last change, and
%%% pins it there. `history/0' says what changed, when, and how it went.
-module(bc_gitops).

-include("bc_gitops.hrl").

-export([reconcile/0, sync/0, plan/0, status/0, suspend/0, resume/0,
         get_desired_state/0, get_current_state/0, get_app_status/1,
         deploy/1, remove/1, upgrade/2, start_reconciler/1, stop_reconciler/0,
         cluster_status/0, history/0, history/1, rollback/1, pin/1, unpin/1, http_port/0]).

%% Waiting for a reconcile: builds can be slow.
-define(RUN_TIMEOUT, infinity).

%% @doc Reconciles now and returns when done: `ok' when the node now
%% matches git; `{error, {out_of_sync, Details}}' when the reconcile ran but
%% some of it could not be applied, where `Details' holds the non-empty ones
%% of `failed' (`[{App, Reason}]', actions that failed this run),
%% `waiting' (`[{App, Why}]', held by backoff or a dependency),
%% `blocked' and `spec_errors' (as in `status/0'); `{error, Reason}' when
%% the reconcile could not run at all (e.g. `{git, {unreachable, Msg}}').
%% A trigger during a running reconcile joins a single follow-up.
%%
%% In cluster mode it asks the coordinator for a reconcile of the cluster,
%% and returns when this member has converged to its result (this
%% member's own result, as above), or with why it cannot
%% (`{error, {no_quorum, Reachable, Members}}', `{error, no_coordinator}').
-spec reconcile() -> ok | {error, term()}.
reconcile() ->
    case clustered() of
        true -> bc_gitops_cluster:reconcile();
        false -> bc_gitops_reconciler:run(reconcile, ?RUN_TIMEOUT)
    end.

%% @doc Same as {@link reconcile/0}.
-spec sync() -> ok | {error, term()}.
sync() ->
    reconcile().

%% @doc What the next reconcile would do, without doing it: pulls, parses
%% and plans against the current state (a dry run, like `flux diff').
%% In cluster mode: this member's own part of the plan, from the
%% coordinator's parse of the branch.
-spec plan() -> {ok, bc_gitops_plan:plan()} | {error, term()}.
plan() ->
    case clustered() of
        true -> bc_gitops_cluster:plan();
        false -> bc_gitops_reconciler:run(plan, ?RUN_TIMEOUT)
    end.

%% @doc Cluster mode: the cluster as its coordinator sees it:
%% `{ok, #{coordinator => Node, commit => Sha, members => #{Node => #{state
%% => up | down, commit => Sha, apps => #{App => #{version, status,
%% health}}}}, rollouts => [#{app, from, to, done => [Node], current =>
%% [Node], pending => [Node], state => running | halted | done, reason =>
%% term()}], pins => #{App => #{version, reason, at}}}}'. `{error,
%% not_clustered}' on a node not in cluster mode.
-spec cluster_status() -> {ok, map()} | {error, term()}.
cluster_status() ->
    bc_gitops_cluster:status().

%% @doc The port the HTTP face listens on (the one picked, when the
%% `http' option says port 0); `{error, not_running}' when it is off.
-spec http_port() -> {ok, inet:port_number()} | {error, not_running}.
http_port() ->
    bc_gitops_http:port().

-spec clustered() -> boolean().
clustered() ->
    case bc_gitops_reconciler:config() of
        {ok, #{cluster := #{}}} -> true;
        _ -> false
    end.

%% @doc `{ok, #{status, last_commit, app_count, healthy_count, ...}}'; see
%% the module doc for the status values. Also: `suspended', `repo'
%% (credentials masked), `branch', `last_reconcile' (system time, ms),
%% `last_error', `spec_errors' and `spec_warnings' (file, line, field),
%% `blocked' (`[{App, Reason}]'), `waiting' (apps held this run) and
%% `app_errors' (`#{App => #{attempts, reason, version, retry_in_ms}}'),
%% `repairs' (`#{App => #{count, reason, retry_in_ms}}': apps restarted
%% for drift at several reconciles in a row, backing off), `pins'
%% (`#{App => #{version, reason, at}}'; each pinned app is also in
%% `waiting' as `{pinned, Vsn}') and `in_progress' (`[#{app, action, phase,
%% since}]': what runs now, `phase' one of `fetching', `building',
%% `starting', `upgrading', `health_wait' (and `stopping' for a remove),
%% `since' in system time (ms); empty when nothing runs).
-spec status() -> {ok, map()} | {error, not_running}.
status() ->
    bc_gitops_reconciler:status().

%% @doc Pauses automatic reconciles; `reconcile/0' still works.
-spec suspend() -> ok | {error, not_running}.
suspend() ->
    bc_gitops_reconciler:suspend().

%% @doc Resumes automatic reconciles and reconciles now.
-spec resume() -> ok | {error, not_running}.
resume() ->
    bc_gitops_reconciler:resume().

%% @doc The valid specs of the last parse, by name.
-spec get_desired_state() -> {ok, #{atom() => #app_spec{}}} | {error, not_running}.
get_desired_state() ->
    case bc_gitops_reconciler:desired() of
        {ok, Specs} -> {ok, maps:from_list([{S#app_spec.name, S} || S <- Specs])};
        Error -> Error
    end.

%% @doc What the runtime reports, by name.
-spec get_current_state() -> {ok, #{atom() => #app_state{}}} | {error, term()}.
get_current_state() ->
    case bc_gitops_reconciler:config() of
        {ok, #{runtime_module := Runtime}} ->
            try {ok, maps:map(fun(_, S) -> S#app_state{health = bc_gitops_status:health(S)} end,
                              bc_gitops_pass:current_state(Runtime))}
            catch throw:{step_failed, Why} -> {error, Why}
            end;
        Error ->
            Error
    end.

%% @doc One app's state.
-spec get_app_status(atom()) -> {ok, #app_state{}} | {error, not_found | term()}.
get_app_status(App) ->
    case get_current_state() of
        {ok, #{App := State}} -> {ok, State};
        {ok, _} -> {error, not_found};
        Error -> Error
    end.

%% @doc Deploys `Spec' now, bypassing git.
-spec deploy(#app_spec{}) -> ok | {error, term()}.
deploy(#app_spec{} = Spec) ->
    bc_gitops_reconciler:run({manual, {deploy, Spec}}, ?RUN_TIMEOUT).

%% @doc Removes `App' now, bypassing git.
-spec remove(atom()) -> ok | {error, term()}.
remove(App) when is_atom(App) ->
    bc_gitops_reconciler:run({manual, {remove, App}}, ?RUN_TIMEOUT).

%% @doc Moves `App' to `Version' now, bypassing git: its last parsed spec
%% with the version replaced.
-spec upgrade(atom(), binary()) -> ok | {error, term()}.
upgrade(App, Version) when is_atom(App), is_binary(Version) ->
    case {get_desired_state(), get_app_status(App)} of
        {{ok, #{App := Spec}}, {ok, #app_state{version = From}}} ->
            bc_gitops_reconciler:run({manual, {upgrade, Spec#app_spec{version = Version}, From}},
                                     ?RUN_TIMEOUT);
        {{ok, _}, {ok, _}} -> {error, {no_spec, App}};
        {_, {error, _} = Error} -> Error;
        {Error, _} -> Error
    end.

%% @doc The latest changes made to the node's apps (at most 200), newest
%% first: maps of `at' (system time, ms), `commit', `app', `action'
%% (`deploy', `upgrade', `reconfigure', `remove', `rollback' or
%% `repair'), `from' and `to' (versions), `result' (`ok' or `{error,
%% Reason}'), `path' (`hot', `restart', `rolled_back', or `undefined'
%% where it does not apply) and `duration_ms'. Kept under `local_path': it
%% survives a restart. In cluster mode, the entries of every member that
%% answers, merged, each with its `node'.
-spec history() -> {ok, [map()]} | {error, term()}.
history() ->
    history_of(all).

%% @doc The latest changes of one app, as {@link history/0}.
-spec history(atom()) -> {ok, [map()]} | {error, term()}.
history(App) when is_atom(App) ->
    history_of(App).

-spec history_of(all | atom()) -> {ok, [map()]} | {error, term()}.
history_of(Which) ->
    case clustered() of
        true -> bc_gitops_cluster:history(Which);
        false -> bc_gitops_reconciler:history(Which)
    end.

%% @doc Takes `App' back to the spec that ran before its last change,
%% through the runtime's `upgrade/2' (hot where possible; the default
%% runtime keeps the previous build) or `reconfigure/1' (when only the env
%% changed), then pins it there: reconciles leave it at that version,
%% `{pinned, Vsn}' in `status()''s `waiting', until git changes its spec
%% or `unpin/1'. The rest of the repository keeps reconciling. Returns
%% `{ok, #{app, from, to, path}}', or `{error, not_found}',
%% `{error, {no_previous_version, App}}', `{error, {already_rolled_back,
%% App}}' or the runtime's error.
%%
%% In cluster mode the coordinator does it for every member: the spec
%% that settled before the last one (as a member kept it) is pinned and
%% rolled out batch by batch with the usual gates; the call returns once
%% the pin is made, with `path => rollout'.
-spec rollback(atom()) -> {ok, map()} | {error, term()}.
rollback(App) when is_atom(App) ->
    case clustered() of
        true -> bc_gitops_cluster:rollback(App);
        false -> bc_gitops_reconciler:run({rollback, App}, ?RUN_TIMEOUT)
    end.

%% @doc Pins `App' at the version it runs now, until git changes its spec
%% or `unpin/1': `{ok, Vsn}', or `{error, not_found}' when it does not
%% run. In cluster mode, on every member (the coordinator keeps the pin).
-spec pin(atom()) -> {ok, binary()} | {error, term()}.
pin(App) when is_atom(App) ->
    case clustered() of
        true ->
            bc_gitops_cluster:pin(App);
        false ->
            case get_app_status(App) of
                {ok, #app_state{version = V} = State} ->
                    case bc_gitops_reconciler:pin(App, State) of
                        ok -> {ok, V};
                        Error -> Error
                    end;
                Error ->
                    Error
            end
    end.

%% @doc Drops `App''s pin; git is followed again, starting with a
%% reconcile now. `{error, {not_pinned, App}}' when it has none.
-spec unpin(atom()) -> ok | {error, term()}.
unpin(App) when is_atom(App) ->
    case clustered() of
        true -> bc_gitops_cluster:unpin(App);
        false -> bc_gitops_reconciler:unpin(App)
    end.

%% @doc Starts (or replaces) the reconciler with `Config', a map of the
%% same options as the application env. Nothing starts when an option is
%% bad: `{error, {bad_config, Option, Why}}'.
-spec start_reconciler(map()) -> {ok, pid()} | {error, term()}.
start_reconciler(Config) ->
    case bc_gitops_config:from_map(Config) of
        {ok, Checked} -> bc_gitops_sup:start_reconciler(Checked);
        Error -> Error
    end.

%% @doc Stops the reconciler; the apps it deployed keep running.
-spec stop_reconciler() -> ok.
stop_reconciler() ->
    bc_gitops_sup:stop_reconciler().
