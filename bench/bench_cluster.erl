%%% `make bench cluster': a rolling hot upgrade over 5 peer nodes of an app
%%% with no health spec, under a steady client load on every node, next to
%%% the same upgrade on a single node (not clustered), in one run.
%%%
%%% Reported: the coordination overhead per step (from one node's upgrade
%%% done to the next node's upgrade started, both as the nodes' telemetry
%%% saw them), the whole rollout against 5x the single-node upgrade, and
%%% the calls the clients made and how many failed.
%%%
%%% Compiled and loaded by bench.escript, with test/bc_gitops_peers.erl for
%%% the nodes; its functions run on the bench node and, through `peer',
%%% on the nodes.
-module(bench_cluster).

-export([rows/3]).
-export([load/0, loaded/0]).

-define(APP, "bl").

rows(Dir, Smoke, Ebins) ->
    N = case Smoke of true -> 3; false -> 5 end,
    Repo = filename:join(Dir, "bl_src"),
    Gitops = filename:join(Dir, "bl_gitops"),
    [ok = git(D, ["init", "-q", "-b", "main"]) || D <- [make_dir(Repo), make_dir(Gitops)]],
    ok = file:write_file(filename:join(Repo, "Makefile"),
                         "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
                         "\tcp src/bl.app.src ebin/bl.app\n"),
    Id = os:getpid() ++ "_" ++ integer_to_list(erlang:unique_integer([positive])),
    Names = ["blc" ++ integer_to_list(I) ++ "_" ++ Id || I <- lists:seq(1, N)],
    Peers = bc_gitops_peers:start(Names ++ ["bls_" ++ Id], Ebins ++ [Dir]),
    {Cluster, [Single]} = lists:split(N, Peers),
    Members = [Node || {Node, _} <- Cluster],
    Events = [[bc_gitops, upgrade, start], [bc_gitops, upgrade, stop]],
    Call = fun bc_gitops_peers:call/4,
    try
        %% v1 everywhere: the cluster, and the single node alone.
        version(Repo, Gitops, "1.0.0"),
        [ok = Call(P, bc_gitops_peers, boot, [config(Dir, I, Gitops, Members), Events])
         || {I, P} <- lists:zip(lists:seq(1, N), Cluster)],
        ok = Call(Single, bc_gitops_peers, boot,
                  [(config(Dir, 0, Gitops, Members))#{cluster => false}, Events]),
        ok = wait_one_coordinator(Cluster, 200),
        ok = Call(lists:last(Cluster), bc_gitops, reconcile, []),
        ok = Call(Single, bc_gitops, reconcile, []),
        %% v2: the clients run on every node meanwhile.
        version(Repo, Gitops, "2.0.0"),
        [ok = Call(P, ?MODULE, load, []) || P <- Peers],
        T0 = erlang:monotonic_time(microsecond),
        ok = Call(Single, bc_gitops, reconcile, []),
        Alone = erlang:monotonic_time(microsecond) - T0,
        T1 = erlang:monotonic_time(microsecond),
        ok = Call(lists:last(Cluster), bc_gitops, reconcile, []),
        Rollout = erlang:monotonic_time(microsecond) - T1,
        Loads = [Call(P, ?MODULE, loaded, []) || P <- Peers],
        [{<<"2.0.0">>, _} = Call(P, bl_srv, bump, []) || P <- Peers],
        Windows = [window(Call(P, bc_gitops_peers, events, [])) || P <- Cluster],
        Steps = lists:sort(gaps(lists:sort(Windows))),
        Calls = lists:sum([C || {C, _} <- Loads]),
        Failed = lists:sum([F || {_, F} <- Loads]),
        [{io_lib:format("cluster: coordination per step (~p nodes, ~p steps)", [N, N - 1]),
          pct(Steps, 50), lists:last(Steps), undefined},
         {io_lib:format("cluster: whole rolling hot upgrade, ~p nodes (vs ~px one node)", [N, N]),
          Rollout, undefined, N * Alone},
         {"cluster: one node's upgrade alone (the baseline's unit)", Alone, undefined, undefined},
         {"cluster: client calls during the upgrades: failed / made",
          io_lib:format("~p / ~p", [Failed, Calls])}]
    after
        bc_gitops_peers:stop(Peers)
    end.

config(Dir, I, Gitops, Members) ->
    #{repo_url => Gitops, local_path => filename:join(Dir, "bl_node" ++ integer_to_list(I)),
      reconcile_interval => 3600000, cluster => #{members => Members}}.

wait_one_coordinator(_Peers, 0) ->
    {error, no_single_coordinator};
wait_one_coordinator(Peers, Tries) ->
    Known = [bc_gitops_peers:call(P, bc_gitops_cluster, info, []) || P <- Peers],
    case lists:usort([C || #{coordinator := C} <- Known]) of
        [C] when C =/= undefined -> ok;
        _ -> timer:sleep(100), wait_one_coordinator(Peers, Tries - 1)
    end.

%% The node's upgrade window: when its upgrade started and ended.
window(Events) ->
    [Start] = [T || {T, _, [bc_gitops, upgrade, start], #{to_version := <<"2.0.0">>}} <- Events],
    [Stop] = [T || {T, _, [bc_gitops, upgrade, stop], #{to_version := <<"2.0.0">>}} <- Events],
    {Start, Stop}.

gaps([{_, End} | [{Start, _} | _] = Rest]) -> [Start - End | gaps(Rest)];
gaps(_) -> [].

pct(Sorted, P) ->
    lists:nth(max(1, min(length(Sorted), round(P / 100 * length(Sorted)))), Sorted).

%%% On the nodes

%% @private A client that calls the app's server every millisecond (a
%% steady load, not a busy loop: six nodes share the bench machine's
%% cores) until asked.
load() ->
    Pid = spawn(fun() -> client(0, 0) end),
    register(bench_cluster_load, Pid),
    ok.

%% @private Stops the client: {calls, failed}.
loaded() ->
    bench_cluster_load ! {stop, self()},
    receive {loaded, Calls, Failed} -> {Calls, Failed} after 10000 -> timeout end.

client(Calls, Failed) ->
    receive
        {stop, From} -> From ! {loaded, Calls, Failed}
    after 1 ->
        Ok = try bl_srv:bump() of
                 {_, _} -> 0
             catch
                 exit:_ -> 1
             end,
        client(Calls + 1, Failed + Ok)
    end.

%%% The app, its versions and the gitops repository

version(Repo, Gitops, Vsn) ->
    W = fun(Name, Text) -> ok = file:write_file(filename:join([Repo, "src", Name]), Text) end,
    ok = filelib:ensure_dir(filename:join([Repo, "src", "x"])),
    W("bl.app.src", ["{application, bl, [{vsn, \"", Vsn, "\"}, {mod, {bl_app, []}},\n"
                     " {modules, [bl_app, bl_srv]}, {applications, [kernel, stdlib]},\n"
                     " {env, []}]}.\n"]),
    W("bl_app.erl", "-module(bl_app).\n-behaviour(application).\n-behaviour(supervisor).\n"
                    "-export([start/2, stop/1, init/1]).\n"
                    "start(_, _) -> supervisor:start_link({local, bl_sup}, ?MODULE, []).\n"
                    "stop(_) -> ok.\n"
                    "init([]) -> {ok, {#{}, [#{id => s, start => {bl_srv, start_link, []}}]}}.\n"),
    W("bl_srv.erl", ["-module(bl_srv).\n-behaviour(gen_server).\n"
                     "-export([start_link/0, bump/0, init/1, handle_call/3, handle_cast/2,\n"
                     "         code_change/3]).\n"
                     "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, 0, []).\n"
                     "bump() -> gen_server:call(?MODULE, bump).\n"
                     "init(N) -> {ok, N}.\n"
                     "handle_call(bump, _, N) -> {reply, {<<\"", Vsn, "\">>, N + 1}, N + 1}.\n"
                     "handle_cast(_, N) -> {noreply, N}.\n"
                     "code_change(_, N, _) -> {ok, N}.\n"]),
    ok = git(Repo, ["add", "-A"]),
    ok = git(Repo, ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", Vsn]),
    {ok, Sha} = git_out(Repo, ["rev-parse", "HEAD"]),
    Spec = filename:join([Gitops, "apps", "bl", "app.config"]),
    ok = filelib:ensure_dir(Spec),
    ok = file:write_file(Spec, ["#{name => bl, version => <<\"", Vsn, "\">>,\n"
                                "  source => #{type => git, url => <<\"", Repo, "\">>,\n"
                                "              ref => <<\"", Sha, "\">>}}.\n"]),
    ok = git(Gitops, ["add", "-A"]),
    ok = git(Gitops, ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", Vsn]).

make_dir(D) ->
    ok = filelib:ensure_path(D),
    D.

git(Repo, Args) ->
    case git_out(Repo, Args) of
        {ok, _} -> ok;
        Error -> Error
    end.

git_out(Repo, Args) ->
    Env = [{"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"}],
    Port = open_port({spawn_executable, os:find_executable("git")},
                     [{args, Args}, {cd, Repo}, {env, Env}, exit_status, stderr_to_stdout]),
    collect(Port, []).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, [Acc, D]);
        {Port, {exit_status, 0}} -> {ok, string:trim(lists:flatten(Acc))};
        {Port, {exit_status, S}} -> {error, S}
    end.
