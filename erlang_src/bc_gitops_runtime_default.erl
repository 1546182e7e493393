%%% @doc The runtime that works out of the box: it fetches an app's code,
%%% builds it, and runs it on this node.
%%%
%%% Sources:
%%% <ul>
%%% <li>`git': the repository is cloned at `ref' (a branch, a tag or a
%%%     commit SHA; the spec's `version' when `ref' is absent) with the same
%%%     git code as the reconciler, and built with rebar3, mix or make
%%%     ({@link bc_gitops_build});</li>
%%% <li>`release': the tarball is downloaded, its SHA-256 verified before
%%%     anything is unpacked, and unpacked safely
%%%     ({@link bc_gitops_release});</li>
%%% <li>`hex': the package and its hex dependencies come from a hex
%%%     repository (`hex_repo_url', `hex_public_key'; hex.pm by default, or
%%%     `$HEX_MIRROR'), registry signatures and checksums verified
%%%     ({@link bc_gitops_hex}); the dependencies reach a rebar3 build
%%%     through `_checkouts', a mix build through `deps/' (mix runs offline,
%%%     with `<workspace_dir>/.mix' as its `MIX_HOME' and no Hex archive,
%%%     {@link bc_gitops_build}), so the build never goes online.</li>
%%% </ul>
%%% Each version is built in its own directory,
%%% `<workspace_dir>/<app>/<version>'. A build that completed is marked, so
%%% after a node restart an app at the same version starts from its existing
%%% build without fetching again.
%%%
%%% After an upgrade the build of the version that ran before is kept (one
%%% generation, older ones are deleted): a rollback, after a failed health
%%% check, goes back to exactly the code that ran, without fetching or
%%% building, even when the old spec's ref has moved since.
%%%
%%% An app whose spec says `isolation => vm' runs in a guest, a BEAM node
%%% of its own ({@link bc_gitops_vm}): it is built here as any other, then
%%% every step that touches the running app (start, reconfigure, the hot
%%% upgrade and its undo, the state read by `get_current_state/0') runs in
%%% the guest over `erpc', with the same code ({@link bc_gitops_lifecycle}). A
%%% restart there is a fresh guest. An app whose guest died is reported
%%% `failed' (stopped when only the app stopped in a live guest), so the
%%% reconciler heals it as any drift; removing the app stops its guest. A
%%% change of `isolation' or `vm_config' moves the app: stopped where it
%%% ran, started in its new place, and, if it does not start there,
%%% started again where it ran.
-module(bc_gitops_runtime_default).

-behaviour(bc_gitops_runtime).

-include_lib("kernel/include/logger.hrl").
-include("bc_gitops.hrl").

-export([deploy/1, remove/1, upgrade/2, reconfigure/1, get_current_state/0, state_token/0]).
-export([table/0]).

-define(TABLE, bc_gitops_runtime_default_apps).
-define(BUILT, ".bc_gitops_built").
%% A lifecycle step in a guest (a start, a hot upgrade) may be slow.
-define(GUEST_CALL_TIMEOUT, 300000).
%% Reading an app's state in its guest; a guest that does not answer in
%% time is reported as it was last seen.
-define(GUEST_PROBE_TIMEOUT, 5000).

%% What the runtime remembers of an app it started.
%% `sealed': keyed digests of the live values of its encrypted env keys
%% (see bc_gitops_secrets), to tell a value changed on the node.
-record(entry, {state :: #app_state{}, paths = [] :: [file:filename()],
                dir :: file:filename(), sealed = #{} :: #{atom() => binary()}}).

%% @doc The ETS table of the apps this runtime runs (owned by bc_gitops_sup).
-spec table() -> atom().
table() -> ?TABLE.

%% @doc Fetches, builds and starts the app.
-spec deploy(#app_spec{}) -> {ok, #app_state{}} | {error, term()}.
deploy(#app_spec{name = App} = Spec) ->
    case prepare(Spec) of
        {ok, Dir, Ebins} ->
            ok = leave_old_place(Spec),
            ok = bc_gitops_progress:phase(App, starting),
            start(Spec, Dir, Ebins);
        {error, _} = Error ->
            Error
    end.

%% A redeploy of an app that ran in a guest (dead or alive), or that moves
%% out of this node, first stops it where it was; one that stays in this
%% node is started again where it is.
-spec leave_old_place(#app_spec{}) -> ok.
leave_old_place(#app_spec{name = App, isolation = Isolation}) ->
    case lookup(App) of
        {ok, #entry{state = #app_state{node = undefined}}} when Isolation =:= embedded -> ok;
        {ok, Entry} -> stop_app(Entry);
        error -> ok
    end.

%% @doc Stops the app, unloads its code, and deletes its builds.
-spec remove(atom()) -> ok.
remove(App) ->
    case lookup(App) of
        {ok, Entry} -> ok = stop_app(Entry);
        error -> ok
    end,
    ok = drop_entry(App),
    _ = file:del_dir_r(filename:join(workspace(), atom_to_list(App))),
    ok.

%% @doc Moves the app to the spec's version: hot when it can
%% ({@link bc_gitops_hot}: suspend, load, `code_change/3', resume, same
%% processes), else by a restart: stop the old version, start the new; if
%% the new one does not start, the old one is started again and the error
%% reported. Downgrades take the same path. The third element says which
%% path was taken (`hot' or `restart'), with the changed modules and the
%% suspension window for a hot one.
%%
%% A `code_change' that fails on the way up is different: the new
%% version's own upgrade code is broken, and restarting would throw away
%% the state it was meant to convert. The hot steps are undone and the old
%% version keeps running (the same processes, or restarted at the old
%% version when the undo could not be completed); the result is `{error,
%% {rolled_back, {hot_upgrade_failed, Why}}}', so the version is not tried
%% again until its spec changes. On the way down (a revert, or a rollback
%% after a failed health check) the older version is what must run: a
%% failed `code_change({down, _}, ...)' means a restart at it.
-spec upgrade(#app_spec{}, binary()) -> {ok, #app_state{}, map()} | {error, term()}.
upgrade(#app_spec{name = App} = Spec, _From) ->
    case {lookup(App), prepare(Spec)} of
        {_, {error, _} = Error} ->
            Error;
        {error, {ok, Dir, Ebins}} ->
            ok = bc_gitops_progress:phase(App, starting),
            with_path(start(Spec, Dir, Ebins), #{path => restart});
        {{ok, Entry}, {ok, Dir, Ebins}} ->
            case moved(Entry, Spec) of
                true ->
                    ok = bc_gitops_progress:phase(App, starting),
                    restart(Spec, Entry, Dir, Ebins, moved);
                false ->
                    ok = bc_gitops_progress:phase(App, upgrading),
                    hot_or_restart(Spec, Entry, Dir, Ebins)
            end
    end.

-spec hot_or_restart(#app_spec{}, #entry{}, file:filename(), [file:filename()]) ->
    {ok, #app_state{}, map()} | {error, term()}.
hot_or_restart(Spec, Entry, Dir, Ebins) ->
    case running(Entry) andalso hot(Spec, Entry, Dir, Ebins) of
        {ok, _, _} = Hot ->
            Hot;
        {error, {code_change, _} = Why, Undo} ->
            case upward(Entry, Spec) of
                true -> keep_old(Spec, Entry, Dir, Ebins, Why, Undo);
                false -> restart(Spec, Entry, Dir, Ebins, Why)
            end;
        Other ->
            restart(Spec, Entry, Dir, Ebins, hot_failure(Other))
    end.

%% Whether `Spec' says the app runs elsewhere than where it does.
-spec moved(#entry{}, #app_spec{}) -> boolean().
moved(#entry{state = #app_state{isolation = I, vm_config = C}},
      #app_spec{isolation = I, vm_config = C}) -> false;
moved(_Entry, _Spec) -> true.

%% Whether `Spec' moves the app of `Entry' up (not a downgrade).
-spec upward(#entry{}, #app_spec{}) -> boolean().
upward(#entry{state = #app_state{version = From}}, #app_spec{version = To}) ->
    bc_gitops_hot:direction(From, To) =:= up.

-spec hot(#app_spec{}, #entry{}, file:filename(), [file:filename()]) ->
    {ok, #app_state{}, map()} | bc_gitops_hot:failure().
hot(#app_spec{name = App, version = V, env = Env, depends_on = Deps},
    #entry{state = #app_state{version = OldV, env = OldEnv} = Old, paths = OldPaths,
           dir = OldDir} = Entry, Dir, Ebins) ->
    Direction = bc_gitops_hot:direction(OldV, V),
    case at(Entry, bc_gitops_lifecycle, hot_upgrade,
            [App, Ebins, OldPaths, {Direction, binary_to_list(OldV)}, {OldEnv, Env}]) of
        {ok, Info, Paths} ->
            State = Old#app_state{version = V, env = Env, depends_on = Deps, path = Dir},
            New = #entry{state = State, paths = Paths, dir = Dir},
            ok = put_entry(App, New#entry{sealed = sealed(New, Env)}),
            ok = keep_builds(App, [OldDir, Dir]),
            {ok, State, Info#{direction => Direction}};
        Failure ->
            Failure
    end.

-spec hot_failure(false | bc_gitops_hot:failure()) -> term().
hot_failure(false) -> not_running;
hot_failure({error, Why}) -> Why;
hot_failure({error, Why, _Undo}) -> Why.

%% The new version's code_change failed: the old version stays. When the
%% hot steps were undone, its processes carry on as they were; otherwise
%% it is restarted from its own build.
-spec keep_old(#app_spec{}, #entry{}, file:filename(), [file:filename()], term(),
               reverted | not_reverted) -> {error, term()}.
keep_old(Spec, #entry{state = Old, paths = OldPaths, dir = OldDir} = Entry, Dir, Ebins, Why,
         Undo) ->
    _ = at(Entry, bc_gitops_lifecycle, drop_paths,
           [[P || P <- Ebins, not lists:member(P, OldPaths)]]),
    ok = case Dir of
             OldDir -> ok;
             _ -> delete_build(Dir)
         end,
    Failed = {hot_upgrade_failed, Why},
    case Undo of
        reverted ->
            {error, {rolled_back, Failed}};
        not_reverted ->
            ok = stop_app(Entry),
            start_old(Spec, Old, OldDir, OldPaths, Failed)
    end.

%% Starts the version that ran before, where it ran, after `Why' stopped
%% the new one.
-spec start_old(#app_spec{}, #app_state{}, file:filename(), [file:filename()], term()) ->
    {error, term()}.
start_old(Spec, #app_state{version = V, env = Env, isolation = Isolation, vm_config = VmConfig},
          OldDir, OldPaths, Why) ->
    Old = Spec#app_spec{version = V, env = Env, isolation = Isolation, vm_config = VmConfig},
    case start(Old, OldDir, OldPaths) of
        {ok, _} -> {error, {rolled_back, Why}};
        {error, Again} -> {error, {rollback_failed, Why, Again}}
    end.

-spec restart(#app_spec{}, #entry{}, file:filename(), [file:filename()], term()) ->
    {ok, #app_state{}, map()} | {error, term()}.
restart(#app_spec{name = App} = Spec,
        #entry{state = Old, paths = OldPaths, dir = OldDir} = Entry, Dir, Ebins, NotHot) ->
    ok = stop_app(Entry),
    case start(Spec, Dir, Ebins) of
        {ok, State} ->
            ok = keep_builds(App, [OldDir, Dir]),
            {ok, State, #{path => restart, not_hot => NotHot}};
        {error, Why} ->
            start_old(Spec, Old, OldDir, OldPaths, Why)
    end.

-spec with_path({ok, #app_state{}} | {error, term()}, map()) ->
    {ok, #app_state{}, map()} | {error, term()}.
with_path({ok, State}, Info) -> {ok, State, Info};
with_path(Error, _Info) -> Error.

%% Whether the app of `Entry' runs (in its guest, if it has one).
-spec running(#entry{}) -> boolean().
running(#entry{state = #app_state{name = App}} = Entry) ->
    case probe([Entry]) of
        #{App := {running, _, _}} -> true;
        _ -> false
    end.

%% @doc Applies a changed env to the running app and calls its
%% `config_change/3'.
-spec reconfigure(#app_spec{}) -> {ok, #app_state{}} | {error, term()}.
reconfigure(#app_spec{name = App, env = Env}) ->
    case lookup(App) of
        {ok, #entry{state = #app_state{env = OldEnv} = State} = Entry} ->
            case at(Entry, bc_gitops_lifecycle, reconfigure, [App, OldEnv, Env]) of
                ok ->
                    New = State#app_state{env = Env},
                    Sealed = sealed(Entry, Env),
                    ok = put_entry(App, Entry#entry{state = New, sealed = Sealed}),
                    {ok, New};
                {error, _} = Error ->
                    Error
            end;
        error ->
            {error, not_running}
    end.

%% @doc Every app this runtime started, with its status read now.
-spec get_current_state() -> {ok, #{atom() => #app_state{}}}.
get_current_state() ->
    Entries = [Entry || {_, Entry} <- ets:tab2list(?TABLE)],
    Probed = probe(Entries),
    {ok, maps:from_list([{App, refresh(State, Sealed, maps:get(App, Probed, keep))}
                         || #entry{state = #app_state{name = App} = State, sealed = Sealed}
                                <- Entries])}.

%% @doc The state token (see {@link bc_gitops_runtime}): how many changes
%% this runtime has made, and the apps that are no longer as it left them,
%% with their application master and env now: the process it started is
%% gone (stopped, crashed, restarted by hand), or an env value it set was
%% changed or unset by hand (`application:set_env/3'). One look at each
%% app's process and env keys, and no call to any process, where
%% `get_current_state/0' calls each app's master: still one look per app
%% (an env set by hand leaves no other trace), but a cheap one. An app in
%% a guest is never taken as unchanged (reading it is a call to its
%% guest): while there is one, every reconcile reads the state in full.
%% Encrypted values are compared by their keyed digests, and the token
%% holds them as `get_current_state/0' reports them: never a plaintext.
-spec state_token() -> {non_neg_integer(), [{atom(), term(), map()}]}.
state_token() ->
    %% Each app with what it was left with, and nothing else copied out of
    %% the table: a match pattern of an entry (made as a tuple: a record
    %% with '_' fields would not have its fields' types).
    State = erlang:make_tuple(record_info(size, app_state), '_',
                              [{1, app_state}, {#app_state.pid, '$2'}, {#app_state.env, '$3'},
                               {#app_state.node, '$4'}]),
    Entry = erlang:make_tuple(record_info(size, entry), '_',
                              [{1, entry}, {#entry.state, State}, {#entry.sealed, '$5'}]),
    Recorded = ets:select(?TABLE, [{{'$1', Entry}, [], [{{'$1', '$2', '$3', '$4', '$5'}}]}]),
    {changes(), [{App, guest, #{seen => erlang:unique_integer()}}
                 || {App, _, _, Node, _} <- Recorded, Node =/= undefined]
                ++ [{App, application_controller:get_master(App),
                     bc_gitops_secrets:observed(Env, actual_env(App, Env), Sealed)}
                    || {App, Pid, Env, undefined, Sealed} <- Recorded,
                       not (up(App, Pid) andalso env_kept(App, Env, Sealed))]}.

%% Whether the app runs as it was started: the process it started lives
%% (or, for an app without one, it runs).
-spec up(atom(), pid() | undefined) -> boolean().
up(_App, Pid) when is_pid(Pid) -> is_process_alive(Pid);
up(App, undefined) -> is_pid(application_controller:get_master(App)).

-spec env_kept(atom(), map(), #{atom() => binary()}) -> boolean().
env_kept(App, Env, Sealed) ->
    maps:fold(fun(K, {age, A} = V, Same) when is_binary(A) ->
                      Same andalso
                          bc_gitops_secrets:observed(#{K => V}, actual_env(App, #{K => V}), Sealed)
                          =:= #{K => V};
                 (K, V, Same) ->
                      Same andalso application:get_env(App, K) =:= {ok, V}
              end, true, Env).

%% The env for the keys the spec set, as it is now: a key unset by hand is
%% missing.
-spec actual_env(atom(), map()) -> map().
actual_env(App, Env) ->
    maps:from_list([{K, V} || K <- maps:keys(Env), {ok, V} <- [application:get_env(App, K)]]).

%%% Internals

%% Every change of the table goes through these two: the state token
%% counts them.
-spec put_entry(atom(), #entry{}) -> ok.
put_entry(App, Entry) ->
    true = ets:insert(?TABLE, {App, Entry}),
    changed().

-spec drop_entry(atom()) -> ok.
drop_entry(App) ->
    true = ets:delete(?TABLE, App),
    changed().

%% The count of changes, beside the apps under a key no app has.
-spec changed() -> ok.
changed() ->
    _ = ets:update_counter(?TABLE, {changes}, 1, {{changes}, 0}),
    ok.

-spec changes() -> non_neg_integer().
changes() ->
    case ets:lookup(?TABLE, {changes}) of
        [{_, N}] -> N;
        [] -> 0
    end.

%% The state now of the apps of `Entries': each in this node, or in its
%% guest (all guests asked at once). A guest that died: `failed'; one
%% that does not answer in time: `keep' (as last seen).
-spec probe([#entry{}]) ->
    #{atom() => {running, pid() | undefined, map()} | stopped | failed | keep}.
probe(Entries) ->
    Asked = [{App, case bc_gitops_vm:lookup(App) of
                       {up, Node} when Node =:= N ->
                           {ask, erpc:send_request(Node, bc_gitops_lifecycle, probe,
                                                   [App, maps:keys(Env)])};
                       _ ->
                           failed
                   end}
             || #entry{state = #app_state{name = App, node = N, env = Env}} <- Entries,
                N =/= undefined],
    Deadline = erlang:monotonic_time(millisecond) + ?GUEST_PROBE_TIMEOUT,
    Guests = [{App, case Ask of
                        {ask, Req} ->
                            Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
                            try erpc:receive_response(Req, Left) of
                                Probed -> Probed
                            catch
                                error:{erpc, timeout} -> keep;
                                _:_ -> failed
                            end;
                        failed ->
                            failed
                    end} || {App, Ask} <- Asked],
    Here = [{App, bc_gitops_lifecycle:probe(App, maps:keys(Env))}
            || #entry{state = #app_state{name = App, node = undefined, env = Env}} <- Entries],
    maps:from_list(Here ++ Guests).

%% The env reported is the live value of each key the spec set: a value
%% changed or unset by hand shows as a difference, and the plan
%% reconfigures it back. An encrypted value is reported encrypted, or as
%% `{age, changed}' (bc_gitops_secrets:observed/3), never as it is live.
-spec refresh(#app_state{}, #{atom() => binary()},
              {running, pid() | undefined, map()} | stopped | failed | keep) -> #app_state{}.
refresh(#app_state{env = Env} = S, Sealed, {running, Pid, Live}) ->
    S#app_state{status = running, pid = Pid, env = bc_gitops_secrets:observed(Env, Live, Sealed)};
refresh(S, _Sealed, stopped) -> S#app_state{status = stopped, pid = undefined};
refresh(S, _Sealed, failed) -> S#app_state{status = failed, pid = undefined};
refresh(S, _Sealed, keep) -> S.

%% Keyed digests of the live values of the encrypted keys of `Env', read
%% where the app of `Entry' runs right after they were set.
-spec sealed(#entry{}, map()) -> #{atom() => binary()}.
sealed(#entry{state = #app_state{name = App}} = Entry, Env) ->
    case bc_gitops_secrets:encrypted_keys(Env) of
        [] ->
            #{};
        Keys ->
            case at(Entry, bc_gitops_lifecycle, probe, [App, Keys]) of
                {running, _, Live} -> bc_gitops_secrets:fingerprint(Env, Live);
                _ -> #{}
            end
    end.

%% Runs `M:F(A)' where the app of `Entry' runs: here, or in its guest. A
%% guest has no age identity: the encrypted env values in `A' are
%% decrypted here, sent over distribution, and scrubbed out of what comes
%% back (bc_gitops_secrets:with_revealed/3).
-spec at(#entry{}, module(), atom(), [term()]) -> term().
at(#entry{state = #app_state{node = undefined}}, M, F, A) ->
    apply(M, F, A);
at(#entry{state = #app_state{name = App, node = Node}}, M, F, A) ->
    bc_gitops_secrets:with_revealed(App, A, fun(Plain) -> guest_call(Node, M, F, Plain) end).

%% A call in a guest; a guest lost meanwhile is an error of the step,
%% not a crash of the runtime.
-spec guest_call(node(), module(), atom(), [term()]) -> term().
guest_call(Node, M, F, A) ->
    try erpc:call(Node, M, F, A, ?GUEST_CALL_TIMEOUT)
    catch error:{erpc, Why} -> {error, {guest_lost, Node, Why}}
    end.

%% Stops the app of `Entry' where it runs: its guest is stopped with it.
-spec stop_app(#entry{}) -> ok.
stop_app(#entry{state = #app_state{name = App, node = undefined}, paths = Paths}) ->
    bc_gitops_lifecycle:stop(App, Paths);
stop_app(#entry{state = #app_state{name = App}}) ->
    bc_gitops_vm:stop(App).

%% Where the app of `Spec' is to run: `undefined' for this node, or a new
%% guest's node.
-spec place(#app_spec{}) -> {ok, node() | undefined} | {error, term()}.
place(#app_spec{isolation = embedded}) ->
    {ok, undefined};
place(#app_spec{name = App, isolation = vm, vm_config = VmConfig}) ->
    bc_gitops_vm:start(App, VmConfig, filename:join(workspace(), ".vm")).

-spec start(#app_spec{}, file:filename(), [file:filename()]) ->
    {ok, #app_state{}} | {error, term()}.
start(#app_spec{name = App, version = V, env = Env, depends_on = Deps, isolation = Isolation,
             vm_config = VmConfig} = Spec, Dir, Ebins) ->
    case place(Spec) of
        {ok, Node} ->
            State0 = #app_state{name = App, version = V, status = running, path = Dir,
                                env = Env, depends_on = Deps, isolation = Isolation,
                                vm_config = VmConfig, node = Node},
            Entry0 = #entry{state = State0, dir = Dir},
            case at(Entry0, bc_gitops_lifecycle, start, [App, Ebins, Env]) of
                {ok, Paths} ->
                    Top = at(Entry0, bc_gitops_lifecycle, top_pid, [App]),
                    State = State0#app_state{pid = case is_pid(Top) of
                                                       true -> Top;
                                                       false -> undefined
                                                   end,
                                             started_at = erlang:system_time(millisecond)},
                    Entry = Entry0#entry{state = State, paths = Paths},
                    ok = put_entry(App, Entry#entry{sealed = sealed(Entry, Env)}),
                    {ok, State};
                {error, _} = Error ->
                    _ = [bc_gitops_vm:stop(App) || Node =/= undefined],
                    Error
            end;
        {error, _} = Error ->
            Error
    end.

%% The build directory and its ebins: an existing completed build of this
%% version, or a fresh fetch and build.
-spec prepare(#app_spec{}) -> {ok, file:filename(), [file:filename()]} | {error, term()}.
prepare(#app_spec{name = App, version = V} = Spec) ->
    Dir = filename:join([workspace(), atom_to_list(App), safe_name(V)]),
    Marker = filename:join(Dir, ?BUILT),
    case file:consult(Marker) of
        {ok, [{ebins, Ebins}]} ->
            {ok, Dir, Ebins};
        _ ->
            _ = file:del_dir_r(Dir),
            case fetch_and_build(Spec, Dir) of
                {ok, Ebins} ->
                    ok = file:write_file(Marker, io_lib:format("~tp.~n", [{ebins, Ebins}])),
                    {ok, Dir, Ebins};
                {error, _} = Error ->
                    _ = file:del_dir_r(Dir),
                    Error
            end
    end.

-spec fetch_and_build(#app_spec{}, file:filename()) -> {ok, [file:filename()]} | {error, term()}.
fetch_and_build(#app_spec{version = V, source = #source_spec{type = git, url = Url, ref = Ref,
                                                              build = Tool}} = Spec, Dir) ->
    Src = filename:join(Dir, "src"),
    Config = config(),
    GitOpts = (bc_gitops_config:git_options(Config))#{url => Url, local_path => Src,
                                                      ref => case Ref of
                                                                 undefined -> V;
                                                                 _ -> Ref
                                                             end},
    case timed(Spec, fetching, fun() -> bc_gitops_git:sync(GitOpts) end) of
        {ok, _} ->
            build(Spec, Src, Tool, Config);
        {error, Why} ->
            {error, {fetch_failed, Why}}
    end;
fetch_and_build(#app_spec{name = App, version = V,
                          source = #source_spec{type = release, url = Url, sha256 = Sha}} = Spec,
                Dir) ->
    Config = config(),
    Opts = maps:with([ca_file], Config),
    Fetch = fun() -> bc_gitops_release:fetch(App, V, Url, Sha, filename:join(Dir, "release"), Opts) end,
    case timed(Spec, fetching, Fetch) of
        {ok, #{lib_dirs := Libs}} -> {ok, [filename:join(L, "ebin") || L <- Libs]};
        {error, _} = Error -> Error
    end;
fetch_and_build(#app_spec{name = App, version = V,
                          source = #source_spec{type = hex, build = Tool}} = Spec, Dir) ->
    Config = config(),
    Opts = maps:from_list([{To, Value} || {From, To} <- [{hex_repo_url, repo_url},
                                                         {hex_public_key, public_key},
                                                         {hex_repo_name, repo_name},
                                                         {ca_file, ca_file}],
                                          #{From := Value} <- [Config]]),
    Fetch = fun() -> bc_gitops_hex:fetch(atom_to_binary(App, utf8), V, filename:join(Dir, "hex"),
                                         Opts#{build => Tool})
            end,
    case timed(Spec, fetching, Fetch) of
        {ok, #{build_dir := BuildDir, tool := Built}} ->
            %% mix gets a MIX_HOME of bc_gitops's own, shared by the builds.
            timed(Spec, building,
                  fun() -> bc_gitops_build:build(Built, BuildDir, maps:get(build_timeout, Config),
                                                 #{mix_home => filename:join(workspace(), ".mix")})
                  end);
        {error, Why} ->
            {error, {fetch_failed, Why}}
    end.

-spec build(#app_spec{}, file:filename(), bc_gitops_build:tool() | undefined,
            bc_gitops_config:config()) -> {ok, [file:filename()]} | {error, term()}.
build(Spec, Src, Tool, Config) ->
    case bc_gitops_build:detect(Src, Tool) of
        {ok, Detected} ->
            timed(Spec, building,
                  fun() -> bc_gitops_build:build(Detected, Src, maps:get(build_timeout, Config)) end);
        {error, _} = Error ->
            Error
    end.

%% A long step (fetch, build): shown in status()'s in_progress, and its
%% start and end logged with the time it took.
-spec timed(#app_spec{}, fetching | building, fun(() -> Result)) -> Result
              when Result :: {ok, term()} | {error, term()}.
timed(#app_spec{name = App, version = V}, Phase, Step) ->
    ok = bc_gitops_progress:phase(App, Phase),
    ?LOG_NOTICE("bc_gitops: ~ts ~ts ~ts", [Phase, App, V]),
    T0 = erlang:monotonic_time(millisecond),
    Result = Step(),
    Ms = erlang:monotonic_time(millisecond) - T0,
    case Result of
        {ok, _} -> ?LOG_NOTICE("bc_gitops: ~ts ~ts ~ts: done in ~b ms", [Phase, App, V, Ms]);
        {error, _} -> ?LOG_WARNING("bc_gitops: ~ts ~ts ~ts: failed after ~b ms", [Phase, App, V, Ms])
    end,
    Result.

%% Deletes the app's builds but those in `Keep' (what runs now and what
%% ran before it).
-spec keep_builds(atom(), [file:filename()]) -> ok.
keep_builds(App, Keep) ->
    %% list_dir, not a wildcard: the workspace path may hold glob characters.
    Base = filename:join(workspace(), atom_to_list(App)),
    Dirs = case file:list_dir(Base) of
               {ok, Names} -> [filename:join(Base, N) || N <- Names];
               {error, _} -> []
           end,
    lists:foreach(fun delete_build/1, [Dir || Dir <- Dirs, not lists:member(Dir, Keep)]).

-spec delete_build(file:filename()) -> ok.
delete_build(Dir) ->
    case file:del_dir_r(Dir) of
        ok -> ok;
        {error, Why} -> ?LOG_WARNING("bc_gitops: cannot delete build ~ts: ~p", [Dir, Why])
    end.

-spec lookup(atom()) -> {ok, #entry{}} | error.
lookup(App) ->
    case ets:lookup(?TABLE, App) of
        [{App, Entry}] -> {ok, Entry};
        [] -> error
    end.

-spec config() -> bc_gitops_config:config().
config() ->
    case bc_gitops_reconciler:config() of
        {ok, Config} -> Config;
        {error, _} -> element(2, bc_gitops_config:from_env())
    end.

-spec workspace() -> file:filename().
workspace() ->
    bc_gitops_config:workspace_dir(config()).

%% A version as a directory name: nothing that could leave the workspace.
-spec safe_name(binary()) -> string().
safe_name(V) ->
    [case C of
         $/ -> $_;
         $\\ -> $_;
         0 -> $_;
         _ -> C
     end || C <- unicode:characters_to_list(V)] ++ [$_ || V =:= <<"..">> orelse V =:= <<".">>].
