%%% @doc An app's lifecycle on this node for the default runtime: its code
%%% paths, load, env, start, reconfigure and stop.
%%%
%%% A fetched build's ebin directories go to the FRONT of the code path, so
%%% that the fetched version wins over an older copy on the node. The ebin
%%% of a dependency that already runs on the node is left out: it is not
%%% loaded twice. The spec's env is set between `application:load/1' and
%%% `application:ensure_all_started/1'. Encrypted env values are decrypted
%%% right before they are set, and every error that comes back is scrubbed
%%% of them ({@link bc_gitops_secrets:with_env/3}).
%%%
%%% In embedded mode (a release booted from its boot script, as relx's
%%% `bin/<rel> foreground' and `daemon' do) nothing is loaded on demand:
%%% every module of the added ebins that is not loaded yet is loaded
%%% before the app starts, as a boot script would have done.
%%%
%%% Everything here acts on the node it runs in: the default runtime calls
%%% it in this node for an embedded app, and over `erpc' in the guest of an
%%% `isolation => vm' app ({@link bc_gitops_vm}), where bc_gitops's ebin is
%%% on the code path.
-module(bc_gitops_lifecycle).

-export([start/3, stop/2, reconfigure/3, restore_env/3, app_of_ebin/1]).
-export([hot_upgrade/5, probe/2, top_pid/1, drop_paths/1]).

%% @doc Adds `Ebins' to the front of the code path (but those of apps
%% already running), loads `App', sets `Env' and starts it with its
%% dependencies. Returns the paths it added, for {@link stop/2}.
-spec start(atom(), [file:filename()], map()) ->
    {ok, [file:filename()]} | {error, term()}.
start(App, Ebins, Env) ->
    bc_gitops_secrets:with_env(App, Env, fun(Plain) -> start_with(App, Ebins, Plain) end).

-spec start_with(atom(), [file:filename()], map()) ->
    {ok, [file:filename()]} | {error, term()}.
start_with(App, Ebins, Env) ->
    Running = [A || {A, _, _} <- application:which_applications()],
    Added = [E || E <- Ebins, Of <- [app_of_ebin(E)],
                  Of =:= App orelse not lists:member(Of, Running)],
    ok = code:add_pathsa(Added),
    case load(App, Added) of
        ok ->
            _ = [application:set_env(App, K, V, [{persistent, true}]) || {K, V} <- maps:to_list(Env)],
            case application:ensure_all_started(App) of
                {ok, _} ->
                    {ok, Added};
                {error, Why} ->
                    _ = stop(App, Added),
                    {error, {start_failed, Why}}
            end;
        {error, Why} ->
            _ = stop(App, Added),
            {error, {load_failed, Why}}
    end.

-spec load(atom(), [file:filename()]) -> ok | {error, term()}.
load(App, Ebins) ->
    case application:load(App) of
        ok -> load_modules(code:get_mode(), Ebins);
        {error, {already_loaded, App}} -> load_modules(code:get_mode(), Ebins);
        {error, _} = Error -> Error
    end.

-spec load_modules(interactive | embedded, [file:filename()]) -> ok | {error, term()}.
load_modules(interactive, _Ebins) ->
    ok;
load_modules(embedded, Ebins) ->
    Beams = [B || E <- Ebins, B <- filelib:wildcard(filename:join(E, "*.beam"))],
    lists:foldl(fun(Beam, ok) -> load_beam(Beam);
                   (_, Error) -> Error
                end, ok, Beams).

%% A module whose name is not an atom yet cannot be loaded: no atom is
%% made before the code server makes it.
-spec load_beam(file:filename()) -> ok | {error, term()}.
load_beam(Beam) ->
    Loaded = try code:is_loaded(list_to_existing_atom(filename:basename(Beam, ".beam")))
             catch error:badarg -> false
             end,
    case Loaded of
        {file, _} -> ok;
        false ->
            case code:load_abs(filename:rootname(Beam)) of
                {module, _} -> ok;
                {error, Why} -> {error, {Beam, Why}}
            end
    end.

%% @doc Stops and unloads `App', purges and deletes its modules, and drops
%% `Paths' from the code path. Modules of another loaded application are
%% kept, and so is the path of another application that still runs (the
%% Elixir an Elixir app brought: its modules not loaded yet must load).
-spec stop(atom(), [file:filename()]) -> ok.
stop(App, Paths) ->
    %% The .app's modules key, and the beams of the app's own ebin: a
    %% hand-written .app may list none, and its code must go all the same.
    Listed = case application:get_key(App, modules) of
                 {ok, Ms} -> Ms;
                 undefined -> []
             end,
    %% A module never loaded has no atom, and nothing to purge.
    Beams = [M || P <- Paths, app_of_ebin(P) =:= App,
                  B <- filelib:wildcard(filename:join(P, "*.beam")),
                  M <- [catch list_to_existing_atom(filename:basename(B, ".beam"))],
                  is_atom(M)],
    Modules = lists:usort(Listed ++ Beams),
    _ = application:stop(App),
    _ = application:unload(App),
    Others = lists:append([Ms || {A, _, _} <- application:loaded_applications(),
                                 {ok, Ms} <- [application:get_key(A, modules)]]),
    _ = [begin
             _ = code:purge(M),
             _ = code:delete(M),
             code:purge(M)
         end || M <- Modules, not lists:member(M, Others)],
    Running = [A || {A, _, _} <- application:which_applications()],
    _ = [code:del_path(P) || P <- Paths, not lists:member(app_of_ebin(P), Running)],
    ok.

%% @doc Applies a new spec env to a running `App': `set_env' for changed
%% and new keys, `unset_env' for keys the previous spec set and this one
%% does not, then `Mod:config_change(Changed, New, Removed)' where `Mod' is
%% the callback module of its `.app' `mod' key (not assumed from its name).
-spec reconfigure(atom(), map(), map()) -> ok | {error, term()}.
reconfigure(App, OldEnv, Env) ->
    %% Only the keys of the old env are read: it needs no decrypting.
    bc_gitops_secrets:with_env(App, Env, fun(Plain) -> reconfigure_with(App, OldEnv, Plain) end).

-spec reconfigure_with(atom(), map(), map()) -> ok | {error, term()}.
reconfigure_with(App, OldEnv, Env) ->
    Current = maps:from_list(application:get_all_env(App)),
    Changed = [{K, V} || {K, V} <- maps:to_list(Env), maps:is_key(K, Current),
                         maps:get(K, Current) =/= V],
    New = [{K, V} || {K, V} <- maps:to_list(Env), not maps:is_key(K, Current)],
    Removed = [K || K <- maps:keys(OldEnv), not maps:is_key(K, Env)],
    _ = [application:set_env(App, K, V, [{persistent, true}]) || {K, V} <- Changed ++ New],
    _ = [application:unset_env(App, K, [{persistent, true}]) || K <- Removed],
    case application:get_key(App, mod) of
        {ok, {Mod, _}} ->
            _ = code:ensure_loaded(Mod),
            case erlang:function_exported(Mod, config_change, 3) of
                true ->
                    try Mod:config_change(Changed, New, Removed) of
                        ok -> ok;
                        Other -> {error, {config_change, Other}}
                    catch
                        Class:Reason -> {error, {config_change, Class, Reason}}
                    end;
                false ->
                    ok
            end;
        _ ->
            ok
    end.

%% @doc After a hot upgrade the application controller holds the new
%% `.app' env: set the spec's env again, and report a change of it through
%% `config_change/3' as {@link reconfigure/3} does.
-spec restore_env(atom(), map(), map()) -> ok.
restore_env(App, OldEnv, Env) ->
    Restored = bc_gitops_secrets:with_env(
                 App, OldEnv,
                 fun(Plain) ->
                         _ = [application:set_env(App, K, V, [{persistent, true}])
                              || {K, V} <- maps:to_list(Plain)],
                         ok
                 end),
    case Restored =:= ok andalso reconfigure(App, OldEnv, Env) of
        ok -> ok;
        {error, Why} ->
            logger:warning("bc_gitops: config_change of ~p after upgrade: ~p", [App, Why])
    end.

%% @doc The hot upgrade of the running `App' to the build in `Ebins'
%% ({@link bc_gitops_hot}), and what follows it on this node: the old
%% version's paths dropped, the spec's env put back and `config_change/3'
%% told. `OldVsn' is `{Direction, RunningVsn}'. Returns the info of the
%% upgrade and the paths the app holds from now on.
-spec hot_upgrade(atom(), [file:filename()], [file:filename()], {up | down, string()},
                  {map(), map()}) ->
    {ok, bc_gitops_hot:info(), [file:filename()]} | bc_gitops_hot:failure().
hot_upgrade(App, Ebins, OldPaths, OldVsn, {OldEnv, Env}) ->
    Before = code:get_path(),
    %% An ebin already on the code path (a running Elixir's) has nothing to
    %% change, and each of its modules not loaded yet would count as new.
    New = [E || E <- Ebins, not lists:member(E, Before)],
    case bc_gitops_hot:upgrade(App, top_pid(App), New, OldVsn) of
        {ok, Info} ->
            ok = drop_paths([P || P <- OldPaths, not lists:member(P, Ebins)]),
            %% The paths the app holds from now on: its own, and those the
            %% upgrade added; not one the node had of itself (a running
            %% Elixir's), which removing the app must leave alone.
            Paths = [E || E <- Ebins, lists:member(E, OldPaths ++ New)],
            %% The application controller re-read the .app file: put the
            %% spec's env back, and tell the app what changed.
            ok = restore_env(App, OldEnv, Env),
            {ok, Info, Paths};
        Failure ->
            Failure
    end.

%% @doc Whether `App' runs, its top supervisor and the values of the env
%% keys `Keys' as they are now (a value changed or unset by hand shows as
%% a difference, and the plan reconfigures it back).
-spec probe(atom(), [atom()]) -> {running, pid() | undefined, map()} | stopped.
probe(App, Keys) ->
    case lists:keymember(App, 1, application:which_applications()) of
        true ->
            {running, top_pid(App),
             maps:from_list([{K, V} || K <- Keys, {ok, V} <- [application:get_env(App, K)]])};
        false ->
            stopped
    end.

%% @doc The top supervisor of the running `App'.
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

%% @doc Drops `Paths' from the code path.
-spec drop_paths([file:filename()]) -> ok.
drop_paths(Paths) ->
    _ = [code:del_path(P) || P <- Paths],
    ok.

%% @doc The application an ebin directory belongs to: from its `.app'
%% file's name; `undefined' when it has none.
-spec app_of_ebin(file:filename()) -> atom() | undefined.
app_of_ebin(Ebin) ->
    case filelib:wildcard(filename:join(Ebin, "*.app")) of
        %% An app that has no atom yet cannot be running: no atom is made.
        [AppFile] ->
            try list_to_existing_atom(filename:basename(AppFile, ".app"))
            catch error:badarg -> undefined
            end;
        _ -> undefined
    end.
