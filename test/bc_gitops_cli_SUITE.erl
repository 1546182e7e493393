%%% The bc_gitops command as a user runs it: a program (the script a
%%% release carries, priv/bc_gitops, started as a port without a shell)
%%% against real peer nodes running bc_gitops and a real app built from
%%% git with make. Every subcommand's output and exit code, the errors
%%% (unreachable node, wrong cookie, no cookie, unknown app), a rollback
%%% -> pin -> git change -> unpin cycle, history and pins surviving a
%%% node restart, and offline validation of a repository with errors and
%%% of one without.
-module(bc_gitops_cli_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([read_commands_and_errors/1, rollback_pin_git_change_unpin/1,
         history_and_pins_survive_a_restart/1, validate_offline/1, status_shows_what_runs/1]).

-import(bc_gitops_test_util, [commit/2, write_file/2]).

suite() -> [{timetrap, {minutes, 10}}].

all() ->
    [read_commands_and_errors, rollback_pin_git_change_unpin,
     history_and_pins_survive_a_restart, validate_offline, status_shows_what_runs].

%% The command installed as a release has it: lib/bc_gitops/{ebin,priv}
%% with the script and the NIF in priv.
init_per_suite(Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_cli"),
    [{cli_dir, Dir}, {cli, bc_gitops_test_util:install_cli(Dir)} | Config].

end_per_suite(Config) ->
    bc_gitops_test_util:rm_rf(?config(cli_dir, Config)).

init_per_testcase(_Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_cli_case"),
    Gitops = filename:join(Dir, "gitops"),
    ok = bc_gitops_test_util:init_repo(Gitops),
    write_file(filename:join([Gitops, "apps", ".keep"]), ""),
    Repo = filename:join(Dir, "cli_kv"),
    ok = bc_gitops_test_util:init_repo(Repo),
    write_file(filename:join(Repo, "Makefile"),
               "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
               "\tcp src/cli_kv.app.src ebin/cli_kv.app\n"),
    %% A tag per version, so that each spec says exactly which code.
    _ = [begin
             kv_app(Repo, V),
             _ = commit(Repo, "cli_kv " ++ V),
             bc_gitops_test_util:git(Repo, ["tag", "v" ++ V])
         end || V <- ["1.0.0", "2.0.0", "3.0.0"]],
    Cookie = "cli_" ++ binary_to_list(binary:encode_hex(crypto:strong_rand_bytes(8))),
    [{dir, Dir}, {gitops, Gitops}, {kv_repo, Repo}, {cookie, Cookie} | Config].

end_per_testcase(_Case, Config) ->
    _ = [catch peer:stop(P) || P <- peers()],
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%%% Cases

%% While a deploy runs (a runtime that takes 8 s to start it), status
%% says which app, which step and for how long; the JSON has it too.
status_shows_what_runs(Config) ->
    Node = boot(Config, "runs"),
    Cli = fun(Args) -> cli(Config, Node, Args) end,
    ok = rpc(Node, bc_gitops_test_runtime, start, []),
    {ok, _} = rpc(Node, bc_gitops, start_reconciler,
                  [#{repo_url => ?config(gitops, Config), reconcile_interval => 3600000,
                     local_path => filename:join(?config(dir, Config), "state_runs2"),
                     runtime_module => bc_gitops_test_runtime}]),
    _ = rpc(Node, bc_gitops, reconcile, []),
    {0, Idle} = Cli(["status"]),
    ?assertEqual(nomatch, string:find(Idle, "running now")),
    _ = rpc(Node, bc_gitops_test_runtime, set_delay, [8000]),
    bc_gitops_test_util:write_spec(?config(gitops, Config), "cli_slow",
                                   bc_gitops_test_util:minimal_spec("cli_slow")),
    _ = commit(?config(gitops, Config), "cli_slow"),
    Self = self(),
    [Peer] = peers(),
    _ = spawn_link(fun() -> Self ! {reconciled, peer:call(Peer, bc_gitops, reconcile, [], 120000)} end),
    ok = wait_until(fun() ->
                            {ok, #{in_progress := P}} = rpc(Node, bc_gitops, status, []),
                            P =/= []
                    end, 50),
    {0, Status} = Cli(["status"]),
    ?assertMatch({match, _}, re:run(Status, "^running now:\n  cli_slow deploy: starting for "
                                            "[0-9.]+ m?s$", [multiline])),
    {0, Json} = Cli(["--json", "status"]),
    ?assertNotEqual(nomatch, string:find(Json, "\"in_progress\":[{\"action\":\"deploy\","
                                               "\"app\":\"cli_slow\",\"phase\":\"starting\"")),
    receive {reconciled, ok} -> ok after 60000 -> ct:fail(no_end) end.

%% status, plan, plan --dir, reconcile, history, suspend, resume, cluster
%% on one node; then each way of getting it wrong.
read_commands_and_errors(Config) ->
    spec(Config, "cli_kv", "1.0.0", "#{greeting => <<\"hi\">>}"),
    Node = boot(Config, "read"),
    Cli = fun(Args) -> cli(Config, Node, Args) end,

    {0, Status} = Cli(["status"]),
    ?assertMatch({match, _}, re:run(Status, "^node \\S+: synced at [0-9a-f]{7} \\(main\\)", [multiline])),
    ?assertMatch({match, _},
                 re:run(Status, "^cli_kv +1\\.0\\.0 +1\\.0\\.0 +running +healthy *$", [multiline])),
    {0, Json} = Cli(["--json", "status"]),
    ?assertNotEqual(nomatch, string:find(Json, "\"app\":\"cli_kv\"")),
    ?assertNotEqual(nomatch, string:find(Json, "\"status\":\"synced\"")),

    {0, NoChange} = Cli(["plan"]),
    ?assertNotEqual(nomatch, string:find(NoChange, "no changes")),
    spec(Config, "cli_kv", "2.0.0", "#{greeting => <<\"hi\">>}"),
    {2, Plan} = Cli(["plan"]),
    ?assertMatch({match, _}, re:run(Plan, "^upgrade +cli_kv +1\\.0\\.0 +2\\.0\\.0", [multiline])),
    {2, PlanJson} = Cli(["plan", "--json"]),
    ?assertNotEqual(nomatch, string:find(PlanJson, "\"action\":\"upgrade\"")),
    %% A pull request's checkout against the node: 3.0.0 and a new app.
    Pr = filename:join(?config(dir, Config), "pr"),
    _ = bc_gitops_test_util:git(?config(dir, Config), ["clone", "-q", ?config(gitops, Config), Pr]),
    write_spec(Pr, "cli_kv", "3.0.0", ?config(kv_repo, Config), "#{}"),
    {2, Diff} = Cli(["plan", "--dir", Pr]),
    ?assertMatch({match, _}, re:run(Diff, "^upgrade +cli_kv +1\\.0\\.0 +3\\.0\\.0", [multiline])),
    %% Planning changed nothing on the node.
    ?assertEqual(<<"1.0.0">>, running(Node)),

    {0, Reconciled} = Cli(["reconcile"]),
    ?assertMatch({match, _}, re:run(Reconciled, "^in sync at [0-9a-f]{7}$", [multiline])),
    ?assertEqual(<<"2.0.0">>, running(Node)),
    {0, History} = Cli(["history"]),
    ct:log("~ts", [History]),
    [Head, Upgrade, Deploy] = lines(History),
    ?assertMatch({match, _}, re:run(Head, "^AT \\(UTC\\) +APP +ACTION +FROM +TO +RESULT +PATH +MS +COMMIT$")),
    ?assertMatch({match, _}, re:run(Upgrade, "cli_kv +upgrade +1\\.0\\.0 +2\\.0\\.0 +ok +hot +\\d+ +[0-9a-f]{7}$")),
    ?assertMatch({match, _}, re:run(Deploy, "cli_kv +deploy +- +1\\.0\\.0 +ok +- +\\d+ +[0-9a-f]{7}$")),
    {0, One} = Cli(["history", "cli_kv"]),
    ?assertEqual(History, One),
    {0, HistoryJson} = Cli(["--json", "history"]),
    ?assertNotEqual(nomatch, string:find(HistoryJson, "\"action\":\"upgrade\",\"app\":\"cli_kv\"")),

    {0, Suspended} = Cli(["suspend"]),
    ?assertNotEqual(nomatch, string:find(Suspended, "suspended")),
    {0, Status2} = Cli(["status"]),
    ?assertNotEqual(nomatch, string:find(Status2, ", suspended")),
    {0, Resumed} = Cli(["resume"]),
    ?assertEqual("resumed: automatic reconciles go on, starting now, on " ++ atom_to_list(Node)
                 ++ "\n", Resumed),
    ?assertMatch({ok, #{suspended := false}}, rpc(Node, bc_gitops, status, [])),
    ?assertEqual({1, "bc_gitops: " ++ atom_to_list(Node) ++ " is not in cluster mode\n"},
                 Cli(["cluster"])),

    %% Every human output fits 100 columns.
    [?assert(string:length(L) =< 100)
     || Out <- [Status, NoChange, Plan, Diff, Reconciled, History, Suspended, Status2, Resumed],
        L <- lines(Out)],

    %% Errors: one line on stderr, exit 1, nothing on stdout, no dump.
    Error = fun(Args, Env, Pattern) ->
                    Err = failed(Config, Args, Env),
                    ?assertMatch([_], lines(Err)),
                    ?assertMatch({match, _}, re:run(Err, Pattern), Err)
            end,
    Cookie = ["--cookie", ?config(cookie, Config)],
    Error(["--node", "nobody_here@127.0.0.1" | Cookie] ++ ["status"], [],
          "^bc_gitops: cannot reach nobody_here@127.0.0.1: no node nobody_here runs on 127.0.0.1$"),
    Error(["--node", atom_to_list(Node), "--cookie", "wrong", "status"], [],
          "^bc_gitops: .* refused the connection: wrong cookie\\?$"),
    Error(["--node", atom_to_list(Node) | Cookie] ++ ["rollback", "no_such_app"], [],
          "^bc_gitops: unknown app no_such_app on "),
    Error(["--node", atom_to_list(Node) | Cookie] ++ ["history", "no_such_app"], [],
          "^bc_gitops: unknown app no_such_app"),
    Error(["--node", atom_to_list(Node) | Cookie] ++ ["unpin", "cli_kv"], [],
          "^bc_gitops: cannot unpin cli_kv: cli_kv is not pinned$"),
    Error(["--node", atom_to_list(Node) | Cookie] ++ ["frobnicate"], [],
          "^bc_gitops: unknown command frobnicate"),
    Error(["--node", atom_to_list(Node), "status"],
          [{"HOME", ?config(dir, Config)}, {"RELEASE_COOKIE", false}],
          "^bc_gitops: no cookie: give --cookie, set \\$RELEASE_COOKIE or create "),
    Error(["status"], [], "^bc_gitops: which node\\? give --node NAME@HOST$"),
    %% The cookie from $RELEASE_COOKIE, then from ~/.erlang.cookie.
    ?assertMatch({0, "node " ++ _}, run(Config, ["--node", atom_to_list(Node), "status"],
                                        [{"RELEASE_COOKIE", ?config(cookie, Config)}],
                                        [stderr_to_stdout])),
    write_file(filename:join(?config(dir, Config), ".erlang.cookie"), ?config(cookie, Config)),
    ?assertMatch({0, "node " ++ _}, run(Config, ["--node", atom_to_list(Node), "status"],
                                        [{"HOME", ?config(dir, Config)}, {"RELEASE_COOKIE", false}],
                                        [stderr_to_stdout])),
    ?assertEqual([], filelib:wildcard(filename:join(?config(dir, Config), "*crash*"))).

%% 2.0.0 is rolled back (hot: the same server, its count kept) and
%% pinned; reconciles leave it while another app still follows git; a
%% git change of its spec ends the pin; a second rollback pinned again is
%% ended by unpin, which returns it to git.
rollback_pin_git_change_unpin(Config) ->
    spec(Config, "cli_kv", "1.0.0", "#{}"),
    Node = boot(Config, "pin"),
    Cli = fun(Args) -> cli(Config, Node, Args) end,
    spec(Config, "cli_kv", "2.0.0", "#{}"),
    {0, _} = Cli(["reconcile"]),
    Server = rpc(Node, erlang, whereis, [cli_kv_srv]),
    1 = rpc(Node, cli_kv_srv, bump, []),

    {0, Rolled} = Cli(["rollback", "cli_kv"]),
    ?assertEqual("rolled back cli_kv from 2.0.0 to 1.0.0 (hot); pinned at 1.0.0 until git changes "
                 "its spec\n(bc_gitops unpin cli_kv follows git again now)\n", Rolled),
    ?assertEqual(<<"1.0.0">>, running(Node)),
    ?assertEqual(Server, rpc(Node, erlang, whereis, [cli_kv_srv])),
    ?assertEqual(2, rpc(Node, cli_kv_srv, bump, [])),
    {ok, #{waiting := [{cli_kv, {pinned, <<"1.0.0">>}}],
           pins := #{cli_kv := #{version := <<"1.0.0">>, reason := rollback}}}} =
        rpc(Node, bc_gitops, status, []),
    {0, Status} = Cli(["status"]),
    ?assertMatch({match, _}, re:run(Status, "^cli_kv +1\\.0\\.0 +2\\.0\\.0 +running +healthy +pinned at 1\\.0\\.0$",
                                    [multiline])),

    %% The rest of the repository keeps reconciling: a second app comes.
    spec(Config, "cli_kv_peer", "1.0.0", "#{}", "v1.0.0"),
    {2, Out} = Cli(["reconcile"]),
    ?assertEqual("out of sync:\n  cli_kv waits: pinned at 1.0.0\n", Out),
    ?assertEqual(<<"1.0.0">>, running(Node)),
    ?assertMatch({ok, #app_state{status = running}},
                 rpc(Node, bc_gitops, get_app_status, [cli_kv_peer])),
    Again = failed(Config, ["--node", atom_to_list(Node), "--cookie", ?config(cookie, Config),
                            "rollback", "cli_kv"], []),
    ?assertEqual("bc_gitops: cannot roll back cli_kv: its last change was a rollback: "
                 "`bc_gitops unpin cli_kv' follows git again\n", Again),

    %% Git changes its spec (3.0.0): the pin ends, git wins.
    spec(Config, "cli_kv", "3.0.0", "#{}"),
    {0, _} = Cli(["reconcile"]),
    ?assertEqual(<<"3.0.0">>, running(Node)),
    ?assertMatch({ok, #{pins := Pins}} when map_size(Pins) =:= 0,
                 rpc(Node, bc_gitops, status, [])),

    %% Rolled back again (to 1.0.0, what ran before 3.0.0), then unpinned.
    {0, _} = Cli(["rollback", "cli_kv"]),
    ?assertEqual(<<"1.0.0">>, running(Node)),
    {0, Unpinned} = Cli(["unpin", "cli_kv"]),
    ?assertEqual("unpinned cli_kv: git is followed again (a reconcile started)\n", Unpinned),
    ok = wait_until(fun() -> running(Node) =:= <<"3.0.0">> end, 200),

    %% pin holds an app where it runs.
    {0, Pinned} = Cli(["pin", "cli_kv"]),
    ?assertEqual("pinned cli_kv at 3.0.0 until git changes its spec\n", Pinned),
    {0, _} = Cli(["unpin", "cli_kv"]),

    {0, History} = Cli(["history", "cli_kv"]),
    ct:log("~ts", [History]),
    Actions = [{A, F, T} || L <- tl(lines(History)),
                            [_, _, _, A, F, T | _] <- [string:lexemes(L, " ")]],
    ?assertEqual([{"upgrade", "1.0.0", "3.0.0"}, {"rollback", "3.0.0", "1.0.0"},
                  {"upgrade", "1.0.0", "3.0.0"}, {"rollback", "2.0.0", "1.0.0"},
                  {"upgrade", "1.0.0", "2.0.0"}, {"deploy", "-", "1.0.0"}], Actions).

%% The history and a pin are on disk: a node started again on the same
%% local_path shows the same history, keeps the pin, and starts the app at
%% its pinned version, not at git's.
history_and_pins_survive_a_restart(Config) ->
    spec(Config, "cli_kv", "1.0.0", "#{}"),
    Node = boot(Config, "restart"),
    Cli = fun(Args) -> cli(Config, Node, Args) end,
    spec(Config, "cli_kv", "2.0.0", "#{}"),
    {0, _} = Cli(["reconcile"]),
    {0, _} = Cli(["rollback", "cli_kv"]),
    {0, Before} = Cli(["--json", "history"]),
    [Peer] = peers(),
    ok = peer:stop(Peer),
    erase(peers),
    Node = boot(Config, "restart"),
    {0, After} = Cli(["--json", "history"]),
    %% The same entries (the restart's own deploy comes on top).
    ?assertNotEqual(nomatch, string:find(After, string:trim(Before, both, "[]\n"))),
    ?assertNotEqual(nomatch, string:find(After, "\"action\":\"rollback\"")),
    ?assertMatch({ok, #{pins := #{cli_kv := #{version := <<"1.0.0">>}}}},
                 rpc(Node, bc_gitops, status, [])),
    ?assertEqual(<<"1.0.0">>, running(Node)),
    {2, Out} = Cli(["reconcile"]),
    ?assertEqual("out of sync:\n  cli_kv waits: pinned at 1.0.0\n", Out).

%% validate needs no node and no network: a repository with errors (an
%% invalid field, a cycle, a missing dependency, and a warning) exits 1,
%% each problem on a line; a clean one exits 0.
validate_offline(Config) ->
    Bad = filename:join(?config(dir, Config), "bad"),
    W = fun(Root, App, Text) -> write_file(filename:join([Root, "apps", App, "app.config"]), Text) end,
    W(Bad, "a", "#{name => a, version => <<\"1\">>, source => #{type => hex}, depends_on => [b]}.\n"),
    W(Bad, "b", "#{name => b, version => <<\"1\">>, source => #{type => hex}, depends_on => [a]}.\n"),
    W(Bad, "c", "#{name => c, version => <<\"1\">>,\n  source => #{type => svn}}.\n"),
    W(Bad, "d", "#{name => d, version => <<\"1\">>, source => #{type => hex}, depends_on => [zz],\n"
                "  colour => red}.\n"),
    Env = [{"HOME", ?config(dir, Config)}, {"RELEASE_COOKIE", false}],
    {1, Out} = run(Config, ["validate", Bad], Env, []),
    ?assertEqual(["apps/c/app.config:2: source.type: \"svn\" is not one of hex | git | release",
                  "warning: apps/d/app.config:2: colour: unknown key colour is ignored",
                  "cycle: a -> b -> a",
                  "d: depends on zz, which is not in the repository",
                  "3 apps, 1 error, 1 warning, 3 blocked by cycles or missing dependencies"],
                 lines(Out)),
    %% A line longer than 100 columns is wrapped at spaces, nothing cut.
    Long = filename:join(?config(dir, Config), "long"),
    Dep = lists:duplicate(90, $q),
    W(Long, "e", "#{name => e, version => <<\"1\">>, source => #{type => hex},\n"
                 "  depends_on => [" ++ Dep ++ "]}.\n"),
    {1, LongOut} = run(Config, ["validate", Long], Env, []),
    ?assertMatch(["e: depends on", "    " ++ _, "    which is not in the repository", _],
                 lines(LongOut)),
    ?assertEqual("    " ++ Dep ++ ",", lists:nth(2, lines(LongOut))),
    {1, Json} = run(Config, ["validate", "--json", Bad], Env, []),
    ?assertNotEqual(nomatch, string:find(Json, "\"valid\":false")),
    ?assertNotEqual(nomatch, string:find(Json, "\"cycles\":[[\"a\",\"b\"]]")),
    ?assertNotEqual(nomatch, string:find(Json, "\"missing_dependencies\":[{\"app\":\"d\",\"missing\":\"zz\"}]")),
    ?assertNotEqual(nomatch, string:find(Json, "\"line\":2")),

    Good = filename:join(?config(dir, Config), "good"),
    W(Good, "a", "#{name => a, version => <<\"1\">>, source => #{type => hex}}.\n"),
    W(Good, "b", "#{name => b, version => <<\"1\">>, source => #{type => hex}, depends_on => [a]}.\n"),
    ?assertEqual({0, "2 apps, 0 errors, 0 warnings\n"},
                 run(Config, ["validate", Good], Env, [stderr_to_stdout])),
    {0, GoodJson} = run(Config, ["--json", "validate", Good], Env, []),
    ?assertNotEqual(nomatch, string:find(GoodJson, "\"valid\":true")),
    ?assertEqual("bc_gitops: " ++ Good ++ "/nowhere is not a directory\n",
                 failed(Config, ["validate", Good ++ "/nowhere"], Env)).

%%% Nodes

%% A peer node running bc_gitops on this case's repository; the same name
%% and local_path again after a restart.
boot(Config, Tag) ->
    Name = "cli_" ++ Tag ++ "_" ++ os:getpid(),
    Paths = [P || P <- code:get_path(), string:find(P, "_build") =/= nomatch],
    {ok, Peer, Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true,
                                    connection => standard_io,
                                    args => ["-setcookie", ?config(cookie, Config),
                                             "-kernel", "logger_level", "warning" |
                                             lists:append([["-pa", P] || P <- Paths])],
                                    wait_boot => 30000}),
    put(peers, [Peer | peers()]),
    {ok, _} = peer:call(Peer, application, ensure_all_started, [bc_gitops]),
    {ok, _} = peer:call(Peer, bc_gitops, start_reconciler,
                        [#{repo_url => ?config(gitops, Config),
                           local_path => filename:join(?config(dir, Config), "state_" ++ Tag),
                           reconcile_interval => 3600000}]),
    ok = wait_until(fun() ->
                            case peer:call(Peer, bc_gitops, status, []) of
                                {ok, #{status := S, last_reconcile := At}} ->
                                    S =/= reconciling andalso At =/= undefined;
                                _ -> false
                            end
                    end, 600),
    Node.

peers() ->
    case get(peers) of
        undefined -> [];
        Ps -> Ps
    end.

rpc(Node, M, F, A) ->
    [Peer] = [P || P <- peers(), catch peer:call(P, erlang, node, []) =:= Node],
    peer:call(Peer, M, F, A, 120000).

running(Node) ->
    {ok, #app_state{version = V}} = rpc(Node, bc_gitops, get_app_status, [cli_kv]),
    V.

wait_until(_Fun, 0) ->
    ct:fail(gave_up);
wait_until(Fun, N) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(100), wait_until(Fun, N - 1)
    end.

%%% The command

%% Runs the command against `Node' with the case's cookie: {Exit, Output}
%% (stdout and stderr together: a line on stderr would break the exact
%% outputs asserted).
cli(Config, Node, Args) ->
    {Exit, Out} = run(Config, ["--node", atom_to_list(Node), "--cookie", ?config(cookie, Config)
                               | Args], [], [stderr_to_stdout]),
    ct:log("bc_gitops ~ts -> ~B~n~ts", [lists:join(" ", Args), Exit, Out]),
    {Exit, Out}.

%% An error: exit 1, nothing on stdout (a run that keeps stderr apart),
%% and one line with everything (a run that takes both).
failed(Config, Args, Env) ->
    {1, ""} = run(Config, Args, Env, []),
    {1, Both} = run(Config, Args, Env, [stderr_to_stdout]),
    ct:log("bc_gitops ~ts -> 1~n~ts", [lists:join(" ", Args), Both]),
    Both.

%% Runs the script as a program (no shell) in the case's directory.
run(Config, Args, Env, Opts) ->
    bc_gitops_test_util:run_cli(?config(cli, Config), Args, ?config(dir, Config),
                                [{env, Env} | Opts]).

lines(Text) ->
    string:lexemes(Text, "\n").

%%% The gitops repository and the app

spec(Config, App, Vsn, Env) ->
    spec(Config, App, Vsn, Env, "v" ++ Vsn).

spec(Config, App, Vsn, Env, Ref) ->
    Repo = case App of
               "cli_kv" -> ?config(kv_repo, Config);
               _ -> peer_repo(Config)
           end,
    write_spec(?config(gitops, Config), App, Vsn, Repo, Env, Ref),
    _ = commit(?config(gitops, Config), App ++ " " ++ Vsn).

write_spec(Root, App, Vsn, Repo, Env) ->
    write_spec(Root, App, Vsn, Repo, Env, "v" ++ Vsn).

write_spec(Root, App, Vsn, Repo, Env, Ref) ->
    write_file(filename:join([Root, "apps", App, "app.config"]),
               ["#{name => ", App, ", version => <<\"", Vsn, "\">>,\n",
                "  source => #{type => git, url => <<\"", Repo, "\">>, ref => <<\"", Ref, "\">>},\n",
                "  env => ", Env, "}.\n"]).

%% A second app, cli_kv_peer, in a repository of its own (made once).
peer_repo(Config) ->
    Repo = filename:join(?config(dir, Config), "cli_kv_peer"),
    case filelib:is_dir(Repo) of
        true ->
            Repo;
        false ->
            ok = bc_gitops_test_util:init_repo(Repo),
            write_file(filename:join(Repo, "Makefile"),
                       "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
                       "\tcp src/cli_kv_peer.app.src ebin/cli_kv_peer.app\n"),
            write_file(filename:join([Repo, "src", "cli_kv_peer_lib.erl"]),
                       "-module(cli_kv_peer_lib).\n-export([hello/0]).\nhello() -> hello.\n"),
            write_file(filename:join([Repo, "src", "cli_kv_peer.app.src"]),
                       "{application, cli_kv_peer, [{vsn, \"1.0.0\"}, {applications, [kernel, stdlib]},\n"
                       " {env, []}]}.\n"),
            _ = commit(Repo, "cli_kv_peer"),
            _ = bc_gitops_test_util:git(Repo, ["tag", "v1.0.0"]),
            Repo
    end.

%% cli_kv at `Vsn': a supervisor and a counter server whose state a hot
%% upgrade keeps.
kv_app(Repo, Vsn) ->
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    W("cli_kv.app.src", ["{application, cli_kv, [{vsn, \"", Vsn, "\"}, {mod, {cli_kv_app, []}},\n"
                         " {modules, [cli_kv_app, cli_kv_srv]},\n"
                         " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W("cli_kv_app.erl",
      ["-module(cli_kv_app).\n-behaviour(application).\n-behaviour(supervisor).\n"
       "-vsn(\"", Vsn, "\").\n"
       "-export([start/2, stop/1, init/1]).\n"
       "start(_, _) -> supervisor:start_link({local, cli_kv_sup}, ?MODULE, []).\nstop(_) -> ok.\n"
       "init([]) -> {ok, {#{}, [#{id => srv, start => {cli_kv_srv, start_link, []},\n"
       "                          modules => [cli_kv_srv]}]}}.\n"]),
    W("cli_kv_srv.erl",
      ["-module(cli_kv_srv).\n-behaviour(gen_server).\n-vsn(\"", Vsn, "\").\n"
       "-export([start_link/0, bump/0, init/1, handle_call/3, handle_cast/2, code_change/3]).\n"
       "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, 0, []).\n"
       "bump() -> gen_server:call(?MODULE, bump).\n"
       "init(N) -> {ok, N}.\n"
       "handle_call(bump, _, N) -> {reply, N + 1, N + 1}.\n"
       "handle_cast(_, N) -> {noreply, N}.\n"
       "code_change(_, N, _) -> {ok, N}.\n"]).
