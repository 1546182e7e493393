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
-module(bc_gitops_runtime_default).

-behaviour(bc_gitops_runtime).

-include_lib("kernel/include/logger.hrl").
-include("bc_gitops.hrl").

-export([deploy/1, remove/1, upgrade/2, reconfigure/1, get_current_state/0, state_token/0]).
-export([table/0]).

-define(TABLE, bc_gitops_runtime_default_apps).
-define(BUILT, ".bc_gitops_built").

%% What the runtime remembers of an app it started.
-record(entry, {state :: #app_state{}, paths = [] :: [file:filename()],
                dir :: file:filename()}).

%% @doc The ETS table of the apps this runtime runs (owned by bc_gitops_sup).
-spec table() -> atom().
table() -> ?TABLE.

%% @doc Fetches, builds and starts the app.
-spec deploy(#app_spec{}) -> {ok, #app_state{}} | {error, term()}.
deploy(#app_spec{} = Spec) ->
    case prepare(Spec) of
        {ok, Dir, Ebins} -> start(Spec, Dir, Ebins);
        {error, _} = Error -> Error
    end.

%% @doc Stops the app, unloads its code, and deletes its builds.
-spec remove(atom()) -> ok.
remove(App) ->
    case lookup(App) of
        {ok, #entry{paths = Paths}} -> ok = bc_gitops_code:stop(App, Paths);
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
            with_path(start(Spec, Dir, Ebins), #{path => restart});
        {{ok, Entry}, {ok, Dir, Ebins}} ->
            case running(App) andalso hot(Spec, Entry, Dir, Ebins) of
                {ok, _, _} = Hot ->
                    Hot;
                {error, {code_change, _} = Why, Undo} ->
                    case upward(Entry, Spec) of
                        true -> keep_old(Spec, Entry, Dir, Ebins, Why, Undo);
                        false -> restart(Spec, Entry, Dir, Ebins, Why)
                    end;
                Other ->
                    restart(Spec, Entry, Dir, Ebins, hot_failure(Other))
            end
    end.

%% Whether `Spec' moves the app of `Entry' up (not a downgrade).
-spec upward(#entry{}, #app_spec{}) -> boolean().
upward(#entry{state = #app_state{version = From}}, #app_spec{version = To}) ->
    bc_gitops_hot:direction(From, To) =:= up.

-spec hot(#app_spec{}, #entry{}, file:filename(), [file:filename()]) ->
    {ok, #app_state{}, map()} | bc_gitops_hot:failure().
hot(#app_spec{name = App, version = V, env = Env, depends_on = Deps},
    #entry{state = #app_state{version = OldV, env = OldEnv} = Old, paths = OldPaths,
           dir = OldDir}, Dir, Ebins) ->
    Direction = bc_gitops_hot:direction(OldV, V),
    Before = code:get_path(),
    %% An ebin already on the code path (a running Elixir's) has nothing to
    %% change, and each of its modules not loaded yet would count as new.
    New = [E || E <- Ebins, not lists:member(E, Before)],
    case bc_gitops_hot:upgrade(App, top_pid(App), New, {Direction, binary_to_list(OldV)}) of
        {ok, Info} ->
            _ = [code:del_path(P) || P <- OldPaths, not lists:member(P, Ebins)],
            %% The paths the app holds from now on: its own, and those the
            %% upgrade added; not one the node had of itself (a running
            %% Elixir's), which removing the app must leave alone.
            Paths = [E || E <- Ebins, lists:member(E, OldPaths ++ New)],
            %% The application controller re-read the .app file: put the
            %% spec's env back, and tell the app what changed.
            ok = bc_gitops_code:restore_env(App, OldEnv, Env),
            State = Old#app_state{version = V, env = Env, depends_on = Deps, path = Dir},
            ok = put_entry(App, #entry{state = State, paths = Paths, dir = Dir}),
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
keep_old(#app_spec{name = App} = Spec,
         #entry{state = Old, paths = OldPaths, dir = OldDir}, Dir, Ebins, Why, Undo) ->
    _ = [code:del_path(P) || P <- Ebins, not lists:member(P, OldPaths)],
    ok = case Dir of
             OldDir -> ok;
             _ -> delete_build(Dir)
         end,
    Failed = {hot_upgrade_failed, Why},
    case Undo of
        reverted ->
            {error, {rolled_back, Failed}};
        not_reverted ->
            ok = bc_gitops_code:stop(App, OldPaths),
            start_old(Spec, Old, OldDir, OldPaths, Failed)
    end.

%% Starts the version that ran before, after `Why' stopped the new one.
-spec start_old(#app_spec{}, #app_state{}, file:filename(), [file:filename()], term()) ->
    {error, term()}.
start_old(Spec, #app_state{version = V, env = Env}, OldDir, OldPaths, Why) ->
    case start(Spec#app_spec{version = V, env = Env}, OldDir, OldPaths) of
        {ok, _} -> {error, {rolled_back, Why}};
        {error, Again} -> {error, {rollback_failed, Why, Again}}
    end.

-spec restart(#app_spec{}, #entry{}, file:filename(), [file:filename()], term()) ->
    {ok, #app_state{}, map()} | {error, term()}.
restart(#app_spec{name = App} = Spec,
        #entry{state = Old, paths = OldPaths, dir = OldDir}, Dir, Ebins, NotHot) ->
    ok = bc_gitops_code:stop(App, OldPaths),
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

-spec running(atom()) -> boolean().
running(App) ->
    lists:keymember(App, 1, application:which_applications()).

%% @doc Applies a changed env to the running app and calls its
%% `config_change/3'.
-spec reconfigure(#app_spec{}) -> {ok, #app_state{}} | {error, term()}.
reconfigure(#app_spec{name = App, env = Env}) ->
    case lookup(App) of
        {ok, #entry{state = #app_state{env = OldEnv} = State} = Entry} ->
            case bc_gitops_code:reconfigure(App, OldEnv, Env) of
                ok ->
                    New = State#app_state{env = Env},
                    ok = put_entry(App, Entry#entry{state = New}),
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
    Running = [A || {A, _, _} <- application:which_applications()],
    {ok, maps:from_list(
           [{App, refresh(State, lists:member(App, Running))}
            || {App, #entry{state = State}} <- ets:tab2list(?TABLE)])}.

%% @doc The state token (see {@link bc_gitops_runtime}): how many changes
%% this runtime has made, and the apps that are no longer as it left them,
%% with their application master and env now: the process it started is
%% gone (stopped, crashed, restarted by hand), or an env value it set was
%% changed or unset by hand (`application:set_env/3'). One look at each
%% app's process and env keys, and no call to any process, where
%% `get_current_state/0' calls each app's master: still one look per app
%% (an env set by hand leaves no other trace), but a cheap one.
-spec state_token() -> {non_neg_integer(), [{atom(), pid() | undefined, map()}]}.
state_token() ->
    %% Each app with the pid and env it was left with, and nothing else
    %% copied out of the table: a match pattern of an entry (made as a
    %% tuple: a record with '_' fields would not have its fields' types).
    State = erlang:make_tuple(record_info(size, app_state), '_',
                              [{1, app_state}, {#app_state.pid, '$2'}, {#app_state.env, '$3'}]),
    Entry = erlang:make_tuple(record_info(size, entry), '_', [{1, entry}, {#entry.state, State}]),
    Recorded = ets:select(?TABLE, [{{'$1', Entry}, [], [{{'$1', '$2', '$3'}}]}]),
    {changes(), [{App, application_controller:get_master(App), actual_env(App, Env)}
                 || {App, Pid, Env} <- Recorded,
                    not (up(App, Pid) andalso env_kept(App, Env))]}.

%% Whether the app runs as it was started: the process it started lives
%% (or, for an app without one, it runs).
-spec up(atom(), pid() | undefined) -> boolean().
up(_App, Pid) when is_pid(Pid) -> is_process_alive(Pid);
up(App, undefined) -> is_pid(application_controller:get_master(App)).

-spec env_kept(atom(), map()) -> boolean().
env_kept(App, Env) ->
    maps:fold(fun(K, V, Same) -> Same andalso application:get_env(App, K) =:= {ok, V} end,
              true, Env).

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

-spec refresh(#app_state{}, boolean()) -> #app_state{}.
refresh(#app_state{name = App, env = Env} = S, true) ->
    %% The env as it is now, for the keys the spec set: a value changed or
    %% unset by hand shows as a difference, and the plan reconfigures it back.
    S#app_state{status = running, pid = top_pid(App), env = actual_env(App, Env)};
refresh(S, false) -> S#app_state{status = stopped, pid = undefined}.

-spec start(#app_spec{}, file:filename(), [file:filename()]) ->
    {ok, #app_state{}} | {error, term()}.
start(#app_spec{name = App, version = V, env = Env, depends_on = Deps}, Dir, Ebins) ->
    case bc_gitops_code:start(App, Ebins, Env) of
        {ok, Paths} ->
            State = #app_state{name = App, version = V, status = running, path = Dir,
                               pid = top_pid(App), started_at = erlang:system_time(millisecond),
                               env = Env, depends_on = Deps},
            ok = put_entry(App, #entry{state = State, paths = Paths, dir = Dir}),
            {ok, State};
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
                                                              build = Tool}}, Dir) ->
    Src = filename:join(Dir, "src"),
    Config = config(),
    GitOpts = (bc_gitops_config:git_options(Config))#{url => Url, local_path => Src,
                                                      ref => case Ref of
                                                                 undefined -> V;
                                                                 _ -> Ref
                                                             end},
    case bc_gitops_git:sync(GitOpts) of
        {ok, _} ->
            build(Src, Tool, Config);
        {error, Why} ->
            {error, {fetch_failed, Why}}
    end;
fetch_and_build(#app_spec{name = App, version = V,
                          source = #source_spec{type = release, url = Url, sha256 = Sha}}, Dir) ->
    Config = config(),
    Opts = maps:with([ca_file], Config),
    case bc_gitops_release:fetch(App, V, Url, Sha, filename:join(Dir, "release"), Opts) of
        {ok, #{lib_dirs := Libs}} -> {ok, [filename:join(L, "ebin") || L <- Libs]};
        {error, _} = Error -> Error
    end;
fetch_and_build(#app_spec{name = App, version = V,
                          source = #source_spec{type = hex, build = Tool}}, Dir) ->
    Config = config(),
    Opts = maps:from_list([{To, Value} || {From, To} <- [{hex_repo_url, repo_url},
                                                         {hex_public_key, public_key},
                                                         {hex_repo_name, repo_name},
                                                         {ca_file, ca_file}],
                                          #{From := Value} <- [Config]]),
    case bc_gitops_hex:fetch(atom_to_binary(App, utf8), V, filename:join(Dir, "hex"),
                             Opts#{build => Tool}) of
        {ok, #{build_dir := BuildDir, tool := Built}} ->
            %% mix gets a MIX_HOME of bc_gitops's own, shared by the builds.
            bc_gitops_build:build(Built, BuildDir, maps:get(build_timeout, Config),
                                  #{mix_home => filename:join(workspace(), ".mix")});
        {error, Why} ->
            {error, {fetch_failed, Why}}
    end.

-spec build(file:filename(), bc_gitops_build:tool() | undefined, bc_gitops_config:config()) ->
    {ok, [file:filename()]} | {error, term()}.
build(Src, Tool, Config) ->
    case bc_gitops_build:detect(Src, Tool) of
        {ok, Detected} -> bc_gitops_build:build(Detected, Src, maps:get(build_timeout, Config));
        {error, _} = Error -> Error
    end.

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

-spec top_pid(atom()) -> pid() | undefined.
top_pid(App) ->
    case application_controller:get_master(App) of
        Master when is_pid(Master) ->
            try application_master:get_child(Master) of
                {Pid, _Mod} when is_pid(Pid) -> Pid;
                _ -> undefined
            catch _:_ -> undefined
            end;
        _ ->
            undefined
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
