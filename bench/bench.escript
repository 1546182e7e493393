#!/usr/bin/env escript
%%! -noshell
%% bc_gitops benchmarks: `make bench' (full) or `make bench-smoke' (tiny
%% sizes, to keep this script from rotting; its numbers mean nothing).
%% Prints one table; docs/benchmarks.md records a run and how to read it.
-mode(compile).

-include("../include/bc_gitops.hrl").

main(Args) ->
    %% `smoke' runs every benchmark on tiny sizes; names (parse, noop,
    %% fetch, hot, latency, memory, gates, cluster, webhook) run only
    %% those, full size.
    Smoke = Args =:= ["smoke"],
    All = [{"parse", fun parse_rows/2}, {"noop", fun noop_rows/2}, {"fetch", fun fetch_rows/2},
           {"hot", fun hot_rows/2}, {"latency", fun latency_rows/2},
           {"memory", fun memory_rows/2}, {"gates", fun gate_rows/2},
           {"cluster", fun cluster_rows/2}, {"validate", fun validate_rows/2},
           {"webhook", fun webhook_rows/2}, {"vm", fun vm_rows/2}],
    Chosen = case Args -- ["smoke"] of
                 [] -> All;
                 Names -> [S || {Name, _} = S <- All, lists:member(Name, Names)]
             end,
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    true = code:add_patha(filename:join([Root, "_build", "default", "lib", "bc_gitops", "ebin"])),
    logger:set_primary_config(level, error),
    Dir = filename:join(tmp(), "bc_gitops_bench_" ++ os:getpid()),
    %% halt/1 skips `after': the directory (a gigabyte in a full run) is
    %% removed before halting.
    Result = try
                 {ok, lists:append([Rows(Dir, Smoke) || {_, Rows} <- Chosen])}
             catch
                 C:R:S -> {failed, C, R, S}
             end,
    _ = file:del_dir_r(Dir),
    case Result of
        {ok, Rows} ->
            io:format("~n~-58s ~12s ~12s ~12s~n", ["benchmark", "p50", "p99", "baseline p50"]),
            [case Row of
                 {Name, P50, P99, Base} ->
                     io:format("~-58s ~12s ~12s ~12s~n", [Name, fmt(P50), fmt(P99), fmt(Base)]);
                 {Name, Text} ->
                     io:format("~-58s ~s~n", [Name, Text])
             end || Row <- Rows],
            halt(0);
        {failed, Class, Reason, Stack} ->
            io:format("bench FAILED: ~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    end.

%% Parse + validate + plan N specs through the NIF, against file:consult/1
%% of the same files (the baseline does less: no validation, no plan).
parse_rows(Dir, Smoke) ->
    Sizes = case Smoke of true -> [20]; false -> [1000, 10000] end,
    lists:append(
      [[parse_row(Dir, N, Format, Smoke) || Format <- [terms, json]] || N <- Sizes]).

parse_row(Dir, N, Format, Smoke) ->
    Repo = filename:join(Dir, io_lib:format("specs_~p_~p", [N, Format])),
    Files = [write_spec(Repo, I, Format, true) || I <- lists:seq(1, N)],
    Runs = case Smoke of true -> 3; false -> 20 end,
    Ours = samples(Runs, fun() ->
                                 {ok, #{specs := Specs, errors := []}} =
                                     bc_gitops_specs:parse_dir(Repo, "apps"),
                                 {ok, _} = bc_gitops_plan:plan(Specs, [], []),
                                 N = length(Specs)
                         end),
    Base = case Format of
               terms -> samples(Runs, fun() -> [{ok, [_]} = file:consult(F) || F <- Files] end);
               json -> undefined
           end,
    {io_lib:format("parse+validate+plan ~p specs (~p)", [N, Format]),
     pct(Ours, 50), pct(Ours, 99), case Base of undefined -> undefined; _ -> pct(Base, 50) end}.

write_spec(Repo, I, Format, Health) ->
    Name = "app" ++ integer_to_list(I),
    Deps = case I > 1 of true -> ["app" ++ integer_to_list(I div 2)]; false -> [] end,
    {File, Text} =
        case Format of
            terms ->
                {"app.config",
                 ["#{name => ", Name, ", version => <<\"1.0.", integer_to_list(I), "\">>,\n",
                  "  source => #{type => git, url => <<\"https://git.example.com/", Name,
                  ".git\">>, ref => <<\"main\">>},\n",
                  "  env => #{port => ", integer_to_list(8000 + I), ", mode => fast, ",
                  "tags => [<<\"a\">>, \"b\", {c, 1.5}]},\n",
                  [["  health => #{type => http, port => ", integer_to_list(8000 + I),
                    ", path => <<\"/health\">>},\n"] || Health],
                  "  depends_on => [", lists:join(", ", Deps), "]}.\n"]};
            json ->
                {"app.json",
                 ["{\"name\": \"", Name, "\", \"version\": \"1.0.", integer_to_list(I), "\",\n",
                  " \"source\": {\"type\": \"git\", \"url\": \"https://git.example.com/", Name,
                  ".git\", \"ref\": \"main\"},\n",
                  " \"env\": {\"port\": ", integer_to_list(8000 + I),
                  ", \"mode\": \"fast\", \"tags\": [\"a\", \"b\", 1.5]},\n",
                  [[" \"health\": {\"type\": \"http\", \"port\": ", integer_to_list(8000 + I),
                    ", \"path\": \"/health\"},\n"] || Health],
                  " \"depends_on\": [", lists:join(", ", ["\"" ++ D ++ "\"" || D <- Deps]), "]}\n"]}
        end,
    Path = filename:join([Repo, "apps", Name, File]),
    ok = filelib:ensure_dir(Path),
    ok = file:write_file(Path, Text),
    Path.

%% `bin/bc_gitops validate DIR' over N specs: the whole command, as a
%% gitops repository's CI runs it (VM start, NIF load, parse, validate,
%% plan for cycles and missing dependencies, output). Goal: 10,000 in
%% under 1 s.
validate_rows(Dir, Smoke) ->
    {N, Runs} = case Smoke of true -> {20, 2}; false -> {10000, 10} end,
    Repo = filename:join(Dir, "validate"),
    [write_spec(Repo, I, terms, true) || I <- lists:seq(1, N)],
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    Cli = filename:join([Root, "bin", "bc_gitops"]),
    Expected = io_lib:format("~B apps, 0 errors, 0 warnings~n", [N]),
    Samples = samples(Runs, fun() ->
                                    Port = open_port({spawn_executable, Cli},
                                                     [{args, ["validate", Repo]}, exit_status,
                                                      stderr_to_stdout, binary]),
                                    {0, Out} = port_output(Port, <<>>),
                                    Out = iolist_to_binary(Expected)
                            end),
    [{io_lib:format("bc_gitops validate, ~p specs (whole command)", [N]), pct(Samples, 50),
      pct(Samples, 99), undefined}].

port_output(Port, Acc) ->
    receive
        {Port, {data, D}} -> port_output(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, S}} -> {S, Acc}
    after 60000 -> error(validate_timeout)
    end.

%% A no-op reconcile: the commit is unchanged and all N apps run at their
%% desired version (a runtime that only reports them), so a reconcile is a
%% git fetch, a cached parse, the runtime's state and a plan. At 100, 1,000
%% and 10,000 apps side by side: the goal is a cost that barely grows with N
%% (10,000 in 10 ms at p50, 1,000 in 3 ms).
noop_rows(Dir, Smoke) ->
    {Sizes, Runs} = case Smoke of true -> {[20], 5}; false -> {[100, 1000, 10000], 200} end,
    [noop_row(Dir, N, Runs) || N <- Sizes].

noop_row(Dir, N, Runs) ->
    Repo = filename:join(Dir, "noop_" ++ integer_to_list(N)),
    %% No health checks here: they would run (and fail: nothing listens)
    %% alongside the reconciles being measured.
    [write_spec(Repo, I, terms, false) || I <- lists:seq(1, N)],
    ok = git(Repo, ["init", "-q", "-b", "main"]),
    ok = git(Repo, ["add", "-A"]),
    ok = git(Repo, ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "specs"]),
    ok = load_runtime(Dir),
    %% The apps of a smaller size run before: each size starts from none.
    bench_runtime:reset(),
    {ok, _} = application:ensure_all_started(bc_gitops),
    {ok, _} = bc_gitops:start_reconciler(#{repo_url => Repo,
                                           local_path => filename:join(Dir, "noop_state_" ++
                                                                           integer_to_list(N)),
                                           runtime_module => bench_runtime,
                                           reconcile_interval => 3600000}),
    ok = bc_gitops:reconcile(),
    {ok, #{status := synced, app_count := N}} = bc_gitops:status(),
    Samples = samples(Runs, fun() -> ok = bc_gitops:reconcile() end),
    ok = application:stop(bc_gitops),
    {io_lib:format("no-op reconcile, ~p apps in sync", [N]), pct(Samples, 50), pct(Samples, 99),
     undefined}.

%% The first reconcile of N apps whose tcp health checks never pass (a
%% closed port): each deploy opens a health gate, and the gates wait side
%% by side, so the reconcile should take about one grace period, not N.
gate_rows(Dir, Smoke) ->
    {N, Grace, Runs} = case Smoke of true -> {10, 300, 1}; false -> {100, 2000, 5} end,
    Port = free_port(),
    Repo = filename:join(Dir, "gates"),
    [begin
         Name = "gate" ++ integer_to_list(I),
         write_file(filename:join([Repo, "apps", Name, "app.config"]),
                    ["#{name => ", Name, ", version => <<\"1\">>, source => #{type => hex},\n",
                     "  health => #{type => tcp, port => ", integer_to_list(Port),
                     ", interval => 60000, timeout => 500}}.\n"])
     end || I <- lists:seq(1, N)],
    ok = git(Repo, ["init", "-q", "-b", "main"]),
    ok = git(Repo, ["add", "-A"]),
    ok = git(Repo, ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "gates"]),
    ok = load_runtime(Dir),
    {ok, _} = application:ensure_all_started(bc_gitops),
    Samples = lists:sort(
                [begin
                     [bench_runtime:remove(list_to_atom("gate" ++ integer_to_list(I)))
                      || I <- lists:seq(1, N)],
                     {ok, _} = bc_gitops:start_reconciler(
                                 #{repo_url => Repo, runtime_module => bench_runtime,
                                   local_path => filename:join(Dir, "gates_" ++ integer_to_list(K)),
                                   reconcile_interval => 3600000, health_grace => Grace}),
                     %% The reconciler's first reconcile starts at once; this
                     %% call joins it as its follow-up, which finds every app
                     %% in backoff and returns at once.
                     T0 = erlang:monotonic_time(microsecond),
                     {error, {out_of_sync, _}} = bc_gitops:reconcile(),
                     erlang:monotonic_time(microsecond) - T0
                 end || K <- lists:seq(1, Runs)]),
    ok = application:stop(bc_gitops),
    [{io_lib:format("first reconcile, ~p apps failing health (vs one grace)", [N]),
      pct(Samples, 50), lists:last(Samples), Grace * 1000}].

%% The records, as bc_gitops has them.
hrl() ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    filename:join([Root, "include", "bc_gitops.hrl"]).

%% (8) A rolling hot upgrade over 5 peer nodes, under load, next to one
%% node's upgrade: bench/bench_cluster.erl, on the demo's peers.
cluster_rows(Dir, Smoke) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    Out = filename:join(Dir, "bench_cluster"),
    ok = bc_gitops_peers_compile(Root, Out),
    {ok, _} = compile:file(filename:join(Root, "bench/bench_cluster.erl"),
                           [{outdir, Out}, report]),
    Ebin = filename:join([Root, "_build", "default", "lib", "bc_gitops", "ebin"]),
    bench_cluster:rows(Out, Smoke, [Ebin]).

%% (10) A push reaching the node: webhook to reconcile start, and git push
%% to the new version running (bench/bench_webhook.erl).
webhook_rows(Dir, Smoke) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    ok = filelib:ensure_path(Dir),
    ok = load_runtime(Dir),
    {ok, _} = compile:file(filename:join(Root, "bench/bench_webhook.erl"), [{outdir, Dir}, report]),
    true = code:add_patha(Dir),
    bench_webhook:rows(filename:join(Dir, "webhook"), Smoke).

bc_gitops_peers_compile(Root, Out) ->
    ok = filelib:ensure_path(Out),
    {ok, _} = compile:file(filename:join(Root, "test/bc_gitops_peers.erl"), [{outdir, Out}, report]),
    true = code:add_patha(Out),
    bc_gitops_peers:compile(Root, Out).

%% A runtime that "runs" whatever it is asked to, in an ETS table. Its
%% state token (the optional callback) is a count of its changes, kept in
%% the same table under a key that is not an app's.
load_runtime(Dir) ->
    case code:is_loaded(bench_runtime) of
        {file, _} -> ok;
        false -> compile_runtime(Dir)
    end.

compile_runtime(Dir) ->
    Src = filename:join(Dir, "bench_runtime.erl"),
    ok = file:write_file(Src, [
        "-module(bench_runtime).\n",
        "-export([deploy/1, remove/1, upgrade/2, reconfigure/1, get_current_state/0, state_token/0,\n",
        "         reset/0]).\n",
        "-include(\"", hrl(), "\").\n",
        "t() -> case ets:whereis(?MODULE) of undefined -> ets:new(?MODULE, [named_table, public,\n",
        "        {heir, whereis(init), none}]); _ -> ?MODULE end.\n",
        "changed() -> ets:update_counter(t(), {changes}, 1, {{changes}, 0}).\n",
        "deploy(#app_spec{name = N, version = V, env = E, depends_on = D}) ->\n",
        "    S = #app_state{name = N, version = V, status = running, env = E, depends_on = D},\n",
        "    ets:insert(t(), {N, S}), changed(), {ok, S}.\n",
        "upgrade(S, _) -> deploy(S).\nreconfigure(S) -> deploy(S).\n",
        "remove(N) -> ets:delete(t(), N), changed(), ok.\n",
        "get_current_state() ->\n",
        "    {ok, maps:from_list([A || {N, _} = A <- ets:tab2list(t()), is_atom(N)])}.\n",
        "state_token() -> ets:lookup(t(), {changes}).\n",
        "reset() -> ets:select_delete(t(), [{{'$1', '_'}, [{is_atom, '$1'}], [true]}]), changed(), ok.\n"]),
    {ok, bench_runtime, Bin} = compile:file(Src, [binary, report]),
    {module, bench_runtime} = code:load_binary(bench_runtime, Src, Bin),
    ok.

%% (3) Fetch of one new commit from a local `git daemon', on a repository
%% with a long history: bc_gitops_git:sync/1 (fetch and checkout) against
%% `git fetch' (fetch only) into a clone of its own, in turns, a new commit
%% pushed before each turn.
fetch_rows(Dir, Smoke) ->
    {Commits, Runs} = case Smoke of true -> {50, 2}; false -> {5000, 15} end,
    Base = filename:join(Dir, "daemon"),
    Bare = filename:join(Base, "long.git"),
    ok = filelib:ensure_dir(filename:join(Bare, "x")),
    ok = git(Bare, ["init", "-q", "--bare", "-b", "main"]),
    ok = fast_import(Bare, Dir, history(1, Commits)),
    Port = free_port(),
    Daemon = open_port({spawn_executable, os:find_executable("git")},
                       [{args, ["daemon", "--reuseaddr", "--export-all", "--base-path=" ++ Base,
                                "--listen=127.0.0.1", "--port=" ++ integer_to_list(Port), Base]},
                        exit_status, stderr_to_stdout]),
    try
        ok = wait_for_port(Port, 100),
        Url = "git://127.0.0.1:" ++ integer_to_list(Port) ++ "/long.git",
        Ours = filename:join(Dir, "fetch_ours"),
        Cli = filename:join(Dir, "fetch_cli"),
        {ok, _} = bc_gitops_git:sync(#{url => Url, local_path => Ours}),
        ok = git(Dir, ["clone", "-q", Url, Cli]),
        Pairs = [begin
                     ok = fast_import(Bare, Dir, history(Commits + I, Commits + I)),
                     T0 = erlang:monotonic_time(microsecond),
                     {ok, #{changed := true}} = bc_gitops_git:sync(#{url => Url, local_path => Ours}),
                     T1 = erlang:monotonic_time(microsecond),
                     ok = git(Cli, ["fetch", "-q", "origin"]),
                     T2 = erlang:monotonic_time(microsecond),
                     {T1 - T0, T2 - T1}
                 end || I <- lists:seq(1, Runs)],
        Nif = lists:sort([N || {N, _} <- Pairs]),
        Git = lists:sort([G || {_, G} <- Pairs]),
        Name = io_lib:format("fetch 1 new commit, ~p-commit history (git daemon)", [Commits]),
        [{Name, pct(Nif, 50), pct(Nif, 99), pct(Git, 50)},
         {"  ratio NIF / git fetch (p50)",
          io_lib:format("~.2f", [pct(Nif, 50) / max(1, pct(Git, 50))])}]
    after
        {os_pid, OsPid} = erlang:port_info(Daemon, os_pid),
        _ = os:cmd("kill " ++ integer_to_list(OsPid)),
        catch port_close(Daemon)
    end.

%% A fast-import stream of commits From..To on main, each changing one of
%% 100 files (so the history is long and the tree has some width).
history(From, To) ->
    [["commit refs/heads/main\n",
      "committer b <b@b> ", integer_to_list(1700000000 + N), " +0000\n",
      data(io_lib:format("commit ~p", [N])),
      case N of
          From when From > 1 -> "from refs/heads/main^0\n";
          _ -> []
      end,
      "M 644 inline apps/f", integer_to_list(N rem 100), "/app.config\n",
      data(io_lib:format("#{name => f~p, version => <<\"1.0.~p\">>}.~n", [N rem 100, N]))]
     || N <- lists:seq(From, To)].

data(Text) ->
    Bin = iolist_to_binary(Text),
    ["data ", integer_to_list(byte_size(Bin)), "\n", Bin, "\n"].

fast_import(Bare, Dir, Stream) ->
    File = filename:join(Dir, "stream.fi"),
    ok = file:write_file(File, Stream),
    _ = os:cmd("git -C '" ++ Bare ++ "' fast-import --quiet < '" ++ File ++ "'"),
    ok.

free_port() ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    ok = gen_tcp:close(L),
    Port.

wait_for_port(_Port, 0) ->
    {error, daemon_not_listening};
wait_for_port(Port, Tries) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [], 100) of
        {ok, S} -> gen_tcp:close(S);
        {error, _} -> timer:sleep(50), wait_for_port(Port, Tries - 1)
    end.

%% (4) Hot upgrade of an app whose N gen_servers (under a
%% simple_one_for_one supervisor) run a changed module, through
%% bc_gitops_hot:upgrade/4, the default runtime's hot path, while 20
%% clients call and cast to random workers. Lost: calls that failed plus
%% casts the workers did not count.
hot_rows(Dir, Smoke) ->
    Sizes = case Smoke of true -> [50]; false -> [1000, 10000] end,
    V1 = hot_build(Dir, "1.0.0", v1),
    V2 = hot_build(Dir, "2.0.0", v2),
    lists:append([hot_row(N, V1, V2) || N <- Sizes]) ++ window_rows(Smoke, V1, V2).

%% The suspension window's spread at the largest size: p50 and p95 of 20
%% upgrades (2 in a smoke run).
window_rows(Smoke, V1, V2) ->
    {N, Runs} = case Smoke of true -> {50, 2}; false -> {10000, 20} end,
    Windows = lists:sort([begin
                              [_, {_, Window, _, _}, _] = hot_row(N, V1, V2),
                              Window
                          end || _ <- lists:seq(1, Runs)]),
    %% A text row: the table's second column is p99, and this is p95.
    [{io_lib:format("hot upgrade, ~p processes: window over ~p runs", [N, Runs]),
      io_lib:format("p50 ~s, p95 ~s", [fmt(pct(Windows, 50)), fmt(pct(Windows, 95))])}].

hot_row(N, V1, V2) ->
    true = code:add_patha(V1),
    ok = application:start(hb),
    Workers = [begin {ok, P} = supervisor:start_child(hb_sup, []), P end
               || _ <- lists:seq(1, N)],
    WorkerT = list_to_tuple(Workers),
    Self = self(),
    Clients = [spawn_link(fun() -> client(Self, WorkerT, 0, 0, 0, 0) end) || _ <- lists:seq(1, 20)],
    timer:sleep(200),
    {Us, {ok, #{suspended_us := Window, processes := Procs}}} =
        timer:tc(bc_gitops_hot, upgrade, [hb, whereis(hb_sup), [V2], {up, "1.0.0"}]),
    timer:sleep(200),
    [C ! stop || C <- Clients],
    Stats = [receive {client, C, Calls, Failed, Casts, Worst} -> {Calls, Failed, Casts, Worst} end
             || C <- Clients],
    Calls = lists:sum([C || {C, _, _, _} <- Stats]),
    Failed = lists:sum([F || {_, F, _, _} <- Stats]),
    Casts = lists:sum([C || {_, _, C, _} <- Stats]),
    Worst = lists:max([W || {_, _, _, W} <- Stats]),
    Counted = lists:sum([gen_server:call(W, casts) || W <- Workers]),
    {v2, _} = gen_server:call(element(1, WorkerT), ping),
    ok = application:stop(hb),
    ok = application:unload(hb),
    _ = [begin code:purge(M), code:delete(M), code:purge(M) end || M <- [hb_app, hb_sup, hb_worker]],
    true = code:del_path(V2),
    _ = code:del_path(V1),
    Lost = Failed + (Casts - Counted),
    [{io_lib:format("hot upgrade, ~p processes (~p moved): total", [N, Procs]), Us, undefined,
      undefined},
     {io_lib:format("hot upgrade, ~p processes: suspension window", [N]), Window, undefined,
      undefined},
     {io_lib:format("hot upgrade, ~p processes: lost / calls+casts sent", [N]),
      io_lib:format("~p / ~p (slowest call ~s)", [Lost, Calls + Casts, fmt(Worst)])}].

client(Parent, Workers, Calls, Failed, Casts, Worst) ->
    receive
        stop -> Parent ! {client, self(), Calls, Failed, Casts, Worst}
    after 0 ->
        W = element(rand:uniform(tuple_size(Workers)), Workers),
        gen_server:cast(W, bump),
        T0 = erlang:monotonic_time(microsecond),
        Ok = try gen_server:call(W, ping, 10000) of
                 {_, _} -> 0
             catch
                 exit:_ -> 1
             end,
        T = erlang:monotonic_time(microsecond) - T0,
        client(Parent, Workers, Calls + 1, Failed + Ok, Casts + 1, max(Worst, T))
    end.

%% The app `hb' at Vsn, compiled into its own ebin.
hot_build(Dir, Vsn, Tag) ->
    Ebin = filename:join([Dir, "hb_" ++ Vsn, "ebin"]),
    ok = filelib:ensure_dir(filename:join(Ebin, "x")),
    Sources =
        [{hb_app, ["-module(hb_app).\n-behaviour(application).\n-export([start/2, stop/1]).\n",
                   "start(_, _) -> hb_sup:start_link().\nstop(_) -> ok.\n"]},
         {hb_sup, ["-module(hb_sup).\n-behaviour(supervisor).\n-export([start_link/0, init/1]).\n",
                   "start_link() -> supervisor:start_link({local, hb_sup}, ?MODULE, []).\n",
                   "init([]) -> {ok, {#{strategy => simple_one_for_one, intensity => 0,",
                   " period => 1}, [#{id => w, start => {hb_worker, start_link, []},",
                   " modules => [hb_worker]}]}}.\n"]},
         {hb_worker, ["-module(hb_worker).\n-behaviour(gen_server).\n-vsn(\"", Vsn, "\").\n",
                      "-export([start_link/0, init/1, handle_call/3, handle_cast/2, code_change/3]).\n",
                      "start_link() -> gen_server:start_link(?MODULE, [], []).\n",
                      "init([]) -> {ok, #{calls => 0, casts => 0}}.\n",
                      "handle_call(ping, _, #{calls := N} = S) -> {reply, {", atom_to_list(Tag),
                      ", N}, S#{calls := N + 1}};\n",
                      "handle_call(casts, _, #{casts := N} = S) -> {reply, N, S}.\n",
                      "handle_cast(bump, #{casts := N} = S) -> {noreply, S#{casts := N + 1}}.\n",
                      "code_change(_, S, _) -> {ok, S}.\n"]}],
    [begin
         Src = filename:join(Ebin, atom_to_list(M) ++ ".erl"),
         ok = file:write_file(Src, Text),
         {ok, M} = compile:file(Src, [{outdir, Ebin}, report])
     end || {M, Text} <- Sources],
    ok = file:write_file(filename:join(Ebin, "hb.app"),
                         io_lib:format("~p.~n", [{application, hb,
                                                 [{vsn, Vsn}, {modules, [hb_app, hb_sup, hb_worker]},
                                                  {registered, [hb_sup]},
                                                  {applications, [kernel, stdlib]},
                                                  {mod, {hb_app, []}}]}])),
    Ebin.

%% (5) Round trips of a normal-priority process to an echo process, one a
%% millisecond, while bc_gitops_git:sync/1 clones a repository of
%% incompressible blobs (file:// remote).
latency_rows(Dir, Smoke) ->
    {Blobs, BlobBytes} = case Smoke of true -> {2, 1 bsl 20}; false -> {50, 4 bsl 20} end,
    Repo = filename:join(Dir, "big"),
    [ok = write_file(filename:join(Repo, "blob" ++ integer_to_list(I)),
                     crypto:strong_rand_bytes(BlobBytes)) || I <- lists:seq(1, Blobs)],
    ok = git(Repo, ["init", "-q", "-b", "main"]),
    ok = git(Repo, ["add", "-A"]),
    ok = git(Repo, ["-c", "user.name=b", "-c", "user.email=b@b", "-c", "core.compression=0",
                    "commit", "-q", "-m", "blobs"]),
    Echo = spawn_link(fun Loop() -> receive {From, Ref} -> From ! Ref, Loop() end end),
    Self = self(),
    T0 = erlang:monotonic_time(microsecond),
    _ = spawn_link(fun() ->
                           Self ! {synced, bc_gitops_git:sync(#{url => "file://" ++ Repo,
                                                                local_path => filename:join(Dir, "big_clone"),
                                                                timeout => 900000})}
                   end),
    {Rtts, Took} = echo_loop(Echo, [], T0),
    unlink(Echo),
    exit(Echo, kill),
    Sorted = lists:sort(Rtts),
    MB = Blobs * BlobBytes div (1 bsl 20),
    [{io_lib:format("echo round trip during a ~p MB clone (~p samples)", [MB, length(Rtts)]),
      pct(Sorted, 50), pct(Sorted, 99), undefined},
     {"  worst round trip; the clone took",
      io_lib:format("~s; ~s", [fmt(lists:last(Sorted)), fmt(Took)])}].

echo_loop(Echo, Acc, T0) ->
    receive
        {synced, Result} ->
            {ok, #{changed := true}} = Result,
            {Acc, erlang:monotonic_time(microsecond) - T0}
    after 1 ->
        Ref = make_ref(),
        T = erlang:monotonic_time(microsecond),
        Echo ! {self(), Ref},
        receive Ref -> ok end,
        echo_loop(Echo, [erlang:monotonic_time(microsecond) - T | Acc], T0)
    end.

write_file(Path, Bin) ->
    ok = filelib:ensure_dir(Path),
    file:write_file(Path, Bin).

%% (6) VmRSS of two fresh peer nodes started alike: one only boots, the
%% other starts bc_gitops and reconciles N specs (the recording runtime).
memory_rows(Dir, Smoke) ->
    N = case Smoke of true -> 20; false -> 1000 end,
    Repo = filename:join(Dir, "memory"),
    [write_spec(Repo, I, terms, false) || I <- lists:seq(1, N)],
    ok = git(Repo, ["init", "-q", "-b", "main"]),
    ok = git(Repo, ["add", "-A"]),
    ok = git(Repo, ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "specs"]),
    Ebin = filename:dirname(code:which(bc_gitops)),
    Without = peer_rss(Ebin, fun(_Peer) -> ok end),
    With = peer_rss(Ebin, fun(Peer) ->
        Src = filename:join(Dir, "bench_runtime.erl"),
        {ok, bench_runtime, Bin} = compile:file(Src, [binary]),
        {module, _} = peer:call(Peer, code, load_binary, [bench_runtime, Src, Bin]),
        {ok, _} = peer:call(Peer, application, ensure_all_started, [bc_gitops]),
        {ok, _} = peer:call(Peer, bc_gitops, start_reconciler,
                            [#{repo_url => Repo, local_path => filename:join(Dir, "memory_state"),
                               runtime_module => bench_runtime, reconcile_interval => 3600000}]),
        ok = peer:call(Peer, bc_gitops, reconcile, [], 120000),
        {ok, #{app_count := N}} = peer:call(Peer, bc_gitops, status, []),
        ok
    end),
    [{io_lib:format("node RSS with bc_gitops and ~p specs / without", [N]),
      io_lib:format("~p MiB / ~p MiB (+~p MiB)",
                    [With div 1024, Without div 1024, (With - Without) div 1024])}].

%% VmRSS in KiB of a peer node after Setup, after a garbage collection of
%% every process and half a second to settle.
peer_rss(Ebin, Setup) ->
    {ok, Peer, _} = peer:start_link(#{connection => standard_io,
                                      args => ["-pa", Ebin, "-kernel", "logger_level", "error"]}),
    try
        ok = Setup(Peer),
        _ = [peer:call(Peer, erlang, garbage_collect, [P])
             || P <- peer:call(Peer, erlang, processes, [])],
        timer:sleep(500),
        OsPid = peer:call(Peer, os, getpid, []),
        {ok, Status} = file:read_file("/proc/" ++ OsPid ++ "/status"),
        [Kb] = [binary_to_integer(string:trim(string:trim(V), trailing, " kB"))
                || <<"VmRSS:", V/binary>> <- binary:split(Status, <<"\n">>, [global])],
        Kb
    after
        peer:stop(Peer)
    end.

%% (9) Isolated-VM apps: the same app (a tcp listener, a tcp health
%% check) deployed by the default runtime embedded and in a guest, in a
%% fresh named peer node (the host): the time from the deploy call to
%% healthy, first with fetch and build, then again from its build (what a
%% heal does: the app stopped, deployed again); and the host's RSS with the
%% embedded app only, then with the guest app too, and the guest's own.
vm_rows(Dir, Smoke) ->
    Runs = case Smoke of true -> 2; false -> 10 end,
    Ebin = filename:dirname(code:which(bc_gitops)),
    {ok, Host, _} = peer:start(#{name => "bench_vm_host_" ++ os:getpid(), host => "127.0.0.1",
                                 longnames => true, connection => standard_io,
                                 args => ["-pa", Ebin, "-kernel", "logger_level", "error"],
                                 wait_boot => 60000}),
    try
        Call = fun(M, F, A) -> peer:call(Host, M, F, A, 600000) end,
        ok = Call(application, load, [bc_gitops]),
        ok = Call(application, set_env, [bc_gitops, local_path, filename:join(Dir, "vm_host")]),
        {ok, _} = Call(application, ensure_all_started, [bc_gitops]),
        HostPid = Call(os, getpid, []),
        Specs = [vm_spec(Dir, Name, Isolation) || {Name, Isolation} <- [{"bvm_emb", embedded},
                                                                           {"bvm_vm", vm}]],
        [{First, _}, {FirstVm, _}] = [vm_deploy(Call, S) || S <- Specs],
        Again = [[vm_redeploy(Call, S) || S <- Specs] || _ <- lists:seq(1, Runs)],
        Emb = lists:sort([E || [E, _] <- Again]),
        Vm = lists:sort([V || [_, V] <- Again]),
        %% Memory: without a guest (the embedded app only), then with it.
        ok = Call(bc_gitops_runtime_default, remove, [bvm_vm]),
        Without = settled_rss(Call, HostPid),
        WithoutErl = Call(erlang, memory, [total]),
        {_, GuestPid} = vm_deploy(Call, lists:last(Specs)),
        With = settled_rss(Call, HostPid),
        WithErl = Call(erlang, memory, [total]),
        Guest = rss_kb(GuestPid),
        ok = Call(application, stop, [bc_gitops]),
        [{"deploy to healthy, fetch + build: embedded / in a guest",
          io_lib:format("~s / ~s", [fmt(First), fmt(FirstVm)])},
         {io_lib:format("deploy to healthy from its build, ~p runs: embedded", [Runs]),
          pct(Emb, 50), pct(Emb, 99), undefined},
         {io_lib:format("deploy to healthy from its build, ~p runs: in a guest", [Runs]),
          pct(Vm, 50), pct(Vm, 99), pct(Emb, 50)},
         {"host RSS with one guest / without; the guest's own RSS",
          io_lib:format("~p MiB / ~p MiB (~s KiB); guest ~p MiB",
                        [With div 1024, Without div 1024, signed(With - Without),
                         Guest div 1024])},
         {"host erlang:memory(total) with one guest / without",
          io_lib:format("~.1f MiB / ~.1f MiB (~s KiB)",
                        [WithErl / 1048576, WithoutErl / 1048576,
                         signed((WithErl - WithoutErl) div 1024)])}]
    after
        catch peer:stop(Host)
    end.

%% The spec of an app `Name' (a repository of its own, built with make):
%% one gen_server listening on a free port, checked by tcp.
vm_spec(Dir, Name, Isolation) ->
    Repo = filename:join(Dir, Name),
    Port = free_port(),
    Files = [{"Makefile", ["all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
                           "\tcp src/", Name, ".app.src ebin/", Name, ".app\n"]},
             {"src/" ++ Name ++ ".app.src",
              ["{application, ", Name, ", [{vsn, \"1.0.0\"}, {mod, {", Name, "_app, []}},\n"
               " {applications, [kernel, stdlib]}, {env, []}]}.\n"]},
             {"src/" ++ Name ++ "_app.erl",
              ["-module(", Name, "_app).\n-behaviour(application).\n-behaviour(supervisor).\n"
               "-export([start/2, stop/1, init/1, listen/0]).\n"
               "start(_, _) -> supervisor:start_link(?MODULE, []).\nstop(_) -> ok.\n"
               "init([]) -> {ok, {#{}, [#{id => l, start => {?MODULE, listen, []}}]}}.\n"
               "listen() -> {ok, proc_lib:spawn_link(fun() ->\n"
               "    {ok, L} = gen_tcp:listen(element(2, application:get_env(", Name, ", port)),\n"
               "                             [{ip, {127, 0, 0, 1}}, {reuseaddr, true}]),\n"
               "    accept(L) end)}.\n"
               "accept(L) -> {ok, S} = gen_tcp:accept(L), gen_tcp:close(S), accept(L).\n"]}],
    [ok = write_file(filename:join(Repo, F), iolist_to_binary(T)) || {F, T} <- Files],
    ok = git(Repo, ["init", "-q", "-b", "main"]),
    ok = git(Repo, ["add", "-A"]),
    ok = git(Repo, ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "v1"]),
    #app_spec{name = list_to_atom(Name), version = <<"1.0.0">>,
              source = #source_spec{type = git, url = list_to_binary(Repo), ref = <<"main">>},
              env = #{port => Port}, health = #health_spec{type = tcp, port = Port},
              isolation = Isolation}.

%% Deploys `Spec' in the host; the time to healthy (its port answers), and
%% its guest's OS pid (undefined when embedded).
vm_deploy(Call, #app_spec{name = App, health = #health_spec{port = Port}} = Spec) ->
    T0 = erlang:monotonic_time(microsecond),
    {ok, #app_state{}} = Call(bc_gitops_runtime_default, deploy, [Spec]),
    ok = wait_for_port(Port, 1000),
    Took = erlang:monotonic_time(microsecond) - T0,
    {Took, case Call(bc_gitops_vm, guests, []) of
               #{App := #{os_pid := OsPid}} -> OsPid;
               _ -> undefined
           end}.

%% The app stopped (its guest with it), then deployed again from its build.
vm_redeploy(Call, #app_spec{name = App, isolation = Isolation} = Spec) ->
    ok = case Isolation of
             embedded -> Call(application, stop, [App]);
             vm -> Call(bc_gitops_vm, stop, [App])
         end,
    element(1, vm_deploy(Call, Spec)).

signed(N) when N >= 0 -> "+" ++ integer_to_list(N);
signed(N) -> integer_to_list(N).

settled_rss(Call, OsPid) ->
    _ = [Call(erlang, garbage_collect, [P]) || P <- Call(erlang, processes, [])],
    timer:sleep(500),
    rss_kb(OsPid).

%% VmRSS of an OS process, in KiB.
rss_kb(OsPid) ->
    {ok, Status} = file:read_file("/proc/" ++ OsPid ++ "/status"),
    [Kb] = [binary_to_integer(string:trim(string:trim(V), trailing, " kB"))
            || <<"VmRSS:", V/binary>> <- binary:split(Status, <<"\n">>, [global])],
    Kb.

samples(Runs, Fun) ->
    _ = Fun(),
    lists:sort([begin
                    T0 = erlang:monotonic_time(microsecond),
                    _ = Fun(),
                    erlang:monotonic_time(microsecond) - T0
                end || _ <- lists:seq(1, Runs)]).

pct(Sorted, P) ->
    lists:nth(max(1, min(length(Sorted), round(P / 100 * length(Sorted)))), Sorted).

fmt(undefined) -> "-";
fmt(Us) when Us >= 1000 -> io_lib:format("~.2f ms", [Us / 1000]);
fmt(Us) -> io_lib:format("~p us", [Us]).

git(Repo, Args) ->
    Env = [{"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"}],
    Port = open_port({spawn_executable, os:find_executable("git")},
                     [{args, Args}, {cd, Repo}, {env, Env}, exit_status, stderr_to_stdout]),
    receive {Port, {exit_status, 0}} -> ok; {Port, {exit_status, S}} -> {error, S} end.

tmp() ->
    case os:getenv("TMPDIR") of
        false -> "/tmp";
        "" -> "/tmp";
        T -> T
    end.
