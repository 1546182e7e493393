%%% @doc Reads and checks the reconciler's configuration, from the
%%% application env or from a map given to `bc_gitops:start_reconciler/1'.
%%%
%%% Every value is checked before a reconciler starts; a bad one gives
%%% `{error, {bad_config, Option, Why}}' naming the option, and nothing
%%% half-configured runs. Unknown options are ignored, so a sys.config
%%% written for a newer version still boots.
%%%
%%% Two git options reach libgit2, whose settings are process-wide (see
%%% {@link bc_gitops_git}): `git_timeout' bounds each network step of a
%%% sync at libgit2's callbacks, while a server silent for 30 s is cut off
%%% whatever it says; `ca_file', once a git sync has used it, is trusted for
%%% every git remote of the node until it stops (release and hex downloads
%%% use it per download).
-module(bc_gitops_config).

-export([from_env/0, from_map/1, defaults/0, checkout_dir/1, state_file/1, git_options/1,
         workspace_dir/1]).

-export_type([config/0]).

-type config() :: #{
    repo_url := binary() | undefined,
    local_path := file:filename(),
    branch := binary(),
    apps_dir := binary(),
    reconcile_interval := pos_integer(),
    runtime_module := module(),
    clock := module(),
    cluster := false | #{members := [node(), ...], max_parallel := pos_integer()},
    git_timeout := pos_integer(),
    backoff_base := pos_integer(),
    backoff_max := pos_integer(),
    ssh_key => binary(),
    ssh_passphrase => binary(),
    ssh_known_hosts => binary(),
    ssh_verify_host := boolean(),
    git_username => binary(),
    git_token => binary(),
    ca_file => binary(),
    workspace_dir => binary(),
    hex_repo_url => binary(),
    hex_public_key => binary(),
    hex_repo_name => binary(),
    build_timeout := pos_integer(),
    self_heal := boolean(),
    health_grace := pos_integer()
}.

-define(OPTIONAL_TEXT, [ssh_key, ssh_passphrase, ssh_known_hosts, git_username, git_token,
                        ca_file, workspace_dir, hex_repo_url, hex_public_key,
                        hex_repo_name]).

%% @doc The default of every option that has one.
-spec defaults() -> map().
defaults() ->
    #{repo_url => undefined,
      local_path => "/var/lib/bc_gitops",
      branch => <<"main">>,
      apps_dir => <<"apps">>,
      reconcile_interval => 60000,
      runtime_module => bc_gitops_runtime_default,
      clock => bc_gitops_clock,
      cluster => false,
      git_timeout => 60000,
      backoff_base => 10000,
      backoff_max => 600000,
      build_timeout => 600000,
      self_heal => true,
      health_grace => 30000,
      ssh_verify_host => true}.

%% @doc The configuration from the `bc_gitops' application env.
-spec from_env() -> {ok, config()} | {error, {bad_config, atom(), binary()}}.
from_env() ->
    from_map(maps:from_list(application:get_all_env(bc_gitops))).

%% @doc Checks `Map' (options missing from it take their defaults).
-spec from_map(map()) -> {ok, config()} | {error, {bad_config, atom(), binary()}}.
from_map(Map) when is_map(Map) ->
    Given = maps:filter(fun(K, V) -> not (V =:= undefined andalso lists:member(K, ?OPTIONAL_TEXT)) end,
                        maps:with(known(), Map)),
    Merged = maps:merge(defaults(), Given),
    try
        Config = maps:map(fun check/2, Merged),
        %% An idle reconciler (no repo) never calls its runtime, so a
        %% runtime that is not there yet need not stop the boot.
        _ = maps:get(repo_url, Config) =:= undefined
            orelse check_module(runtime_module, maps:get(runtime_module, Config),
                                bc_gitops_runtime:callbacks()),
        _ = check_module(clock, maps:get(clock, Config), bc_gitops_clock:callbacks()),
        _ = maps:get(repo_url, Config) =:= undefined
            orelse check_member(maps:get(cluster, Config)),
        {ok, Config}
    catch
        throw:{bad_config, _, _} = Bad -> {error, Bad}
    end.

-spec known() -> [atom()].
known() -> maps:keys(defaults()) ++ ?OPTIONAL_TEXT.

-spec check(atom(), term()) -> term().
check(repo_url, undefined) -> undefined;
check(repo_url, V) -> non_empty_text(repo_url, V);
%% Made absolute now: a later change of the node's working directory must
%% not move the checkout, the builds or the state file.
check(local_path, V) -> filename:absname(unicode:characters_to_list(non_empty_text(local_path, V)));
check(branch, V) -> non_empty_text(branch, V);
check(apps_dir, V) -> non_empty_text(apps_dir, V);
check(K, V) when (K =:= runtime_module orelse K =:= clock), is_atom(V) -> V;
check(K, _) when K =:= runtime_module; K =:= clock -> bad(K, "must be a module name (an atom)");
check(cluster, V) when V =:= false; V =:= undefined -> false;
check(cluster, #{members := [_ | _] = Members} = V) ->
    lists:all(fun(M) -> is_atom(M) andalso length(string:split(atom_to_list(M), "@")) =:= 2 end,
              Members) orelse bad(cluster, "members must be node names (atoms such as 'a@host')"),
    Parallel = maps:get(max_parallel, V, 1),
    is_integer(Parallel) andalso Parallel > 0
        orelse bad(cluster, "max_parallel must be a positive integer"),
    [] =:= maps:keys(V) -- [members, max_parallel]
        orelse bad(cluster, io_lib:format("unknown keys ~p", [maps:keys(V) -- [members, max_parallel]])),
    %% In the order given: batches follow it, and the first is the canary.
    Unique = lists:foldr(fun(M, Acc) -> [M | Acc -- [M]] end, [], Members),
    #{members => Unique, max_parallel => Parallel};
check(cluster, _) ->
    bad(cluster, "must be false or #{members => [Node, ...]} (and max_parallel)");
check(K, V) when (K =:= ssh_verify_host orelse K =:= self_heal), is_boolean(V) -> V;
check(K, _) when K =:= ssh_verify_host; K =:= self_heal -> bad(K, "must be true or false");
check(K, V) when K =:= reconcile_interval; K =:= git_timeout; K =:= backoff_base;
                 K =:= backoff_max; K =:= build_timeout; K =:= health_grace ->
    is_integer(V) andalso V > 0 orelse bad(K, "must be a positive integer (milliseconds)"),
    V;
check(K, V) ->
    true = lists:member(K, ?OPTIONAL_TEXT),
    non_empty_text(K, V).

%% A cluster member runs distributed, and is one of the members.
-spec check_member(false | map()) -> true.
check_member(false) ->
    true;
check_member(#{members := Members}) ->
    node() =/= nonode@nohost
        orelse bad(cluster, "cluster mode needs a distributed node (-name or -sname)"),
    lists:member(node(), Members)
        orelse bad(cluster, io_lib:format("this node (~p) is not one of members", [node()])).

%% The module of option `Key' loads and exports every callback.
-spec check_module(atom(), module(), [{atom(), arity()}]) -> true.
check_module(Key, Module, Callbacks) ->
    case code:ensure_loaded(Module) of
        {module, Module} ->
            Missing = [F || {Name, Arity} = F <- Callbacks,
                            not erlang:function_exported(Module, Name, Arity)],
            Missing =:= [] orelse
                bad(Key, io_lib:format("~p does not export ~p", [Module, Missing]));
        {error, Why} ->
            bad(Key, io_lib:format("module ~p cannot be loaded: ~p", [Module, Why]))
    end.

-spec non_empty_text(atom(), term()) -> binary().
non_empty_text(Key, V) when is_atom(V), V =/= undefined -> non_empty_text(Key, atom_to_list(V));
non_empty_text(Key, V) ->
    case catch unicode:characters_to_binary(V) of
        B when is_binary(B), B =/= <<>> -> B;
        _ -> bad(Key, "must be a non-empty string or binary")
    end.

-spec bad(atom(), iodata()) -> no_return().
bad(Key, Why) ->
    throw({bad_config, Key, iolist_to_binary(Why)}).

%% @doc Where the gitops repository is checked out: `<local_path>/repo'.
%% bc_gitops owns `local_path'; the checkout is forced to the remote, so
%% nothing of ours may live inside it.
-spec checkout_dir(config()) -> file:filename().
checkout_dir(#{local_path := Base}) -> filename:join(Base, "repo").

%% @doc Where the default runtime fetches and builds apps:
%% `workspace_dir', by default `<local_path>/workspace'.
-spec workspace_dir(config()) -> file:filename().
workspace_dir(#{workspace_dir := Dir}) -> unicode:characters_to_list(Dir);
workspace_dir(#{local_path := Base}) -> filename:join(Base, "workspace").

%% @doc Where the last applied state is persisted.
-spec state_file(config()) -> file:filename().
state_file(#{local_path := Base}) -> filename:join(Base, "state.bin").

%% @doc The options of {@link bc_gitops_git:sync/1} for this config.
-spec git_options(config()) -> bc_gitops_git:options().
git_options(#{repo_url := Url, branch := Branch, git_timeout := Timeout,
              ssh_verify_host := Verify} = Config) ->
    Renamed = #{ssh_key => ssh_key, ssh_passphrase => ssh_passphrase,
                ssh_known_hosts => ssh_known_hosts, git_username => username,
                git_token => token, ca_file => ca_file},
    maps:fold(fun(From, To, Acc) ->
                      case Config of
                          #{From := V} -> Acc#{To => V};
                          _ -> Acc
                      end
              end,
              #{url => Url, local_path => checkout_dir(Config), ref => Branch,
                timeout => Timeout, ssh_verify_host => Verify},
              Renamed).
