%%% The default runtime with real builds: small apps the tests write, put
%%% in git repositories, and deploy through the bc_gitops application.
-module(bc_gitops_runtime_default_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([hex_package_with_dependency/1]).
-export([hot_downgrade_by_git_revert/1, hot_upgrade_of_a_tree/1, appup_is_followed/1]).
-export([hot_upgrade_keeps_pid_and_state/1, crashing_code_change_keeps_v1/1,
         crashing_code_change_reverts_converted/1, suspend_timeout_restarts/1,
         stuck_old_code_restarts/1, appup_updates_supervisor/1, on_load_module_restarts/1,
         failed_restart_starts_old_version/1, revert_without_way_down_restarts/1,
         gen_event_handlers_each_changed/1, appup_updates_are_one_step/1,
         appup_downgrade/1]).
-export([rebar3_app_lifecycle/1, makefile_app/1, mix_app/1, app_with_git_dependency/1,
         failed_build_output/1, hung_build_is_killed/1, restart_uses_existing_build/1]).

-import(bc_gitops_test_util, [commit/2, write_file/2, wait_reconciled/1]).

all() ->
    [hex_package_with_dependency, hot_upgrade_keeps_pid_and_state, hot_downgrade_by_git_revert,
     hot_upgrade_of_a_tree, appup_is_followed, appup_updates_supervisor, crashing_code_change_keeps_v1,
     crashing_code_change_reverts_converted, suspend_timeout_restarts, stuck_old_code_restarts,
     on_load_module_restarts, failed_restart_starts_old_version, revert_without_way_down_restarts,
     gen_event_handlers_each_changed, appup_updates_are_one_step, appup_downgrade,
     rebar3_app_lifecycle, makefile_app, mix_app, app_with_git_dependency, failed_build_output,
     hung_build_is_killed, restart_uses_existing_build].

init_per_testcase(_Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_runtime"),
    Gitops = filename:join(Dir, "gitops"),
    ok = bc_gitops_test_util:init_repo(Gitops),
    %% git keeps no empty directory: without this, removing the last app
    %% would remove apps/, which bc_gitops refuses as a misconfiguration.
    write_file(filename:join([Gitops, "apps", ".keep"]), ""),
    %% Time stands still unless a case moves it: no tick or retry comes
    %% in the middle of what a case asserts.
    ok = bc_gitops_test_clock:start(),
    {ok, _} = application:ensure_all_started(bc_gitops),
    [{dir, Dir}, {gitops, Gitops} | Config].

end_per_testcase(_Case, Config) ->
    %% Each case starts from a node without the apps of the others.
    {ok, Apps} = bc_gitops_runtime_default:get_current_state(),
    _ = [bc_gitops_runtime_default:remove(A) || A <- maps:keys(Apps)],
    ok = application:stop(bc_gitops),
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%% Deploy, reconfigure (config_change/3 called), upgrade and remove of a
%% rebar3 app from git, each driven by a commit.
rebar3_app_lifecycle(Config) ->
    App = "rt_rebar",
    Repo = app_repo(Config, App, rebar3),
    write_app(Repo, App, rebar3, "1.0.0", "hello"),
    _ = commit(Repo, "v1"),
    _ = bc_gitops_test_util:git(Repo, ["tag", "v1.0.0"]),
    spec(Config, App, "1.0.0", Repo, "v1.0.0", "#{greeting => <<\"from git\">>}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    ?assertEqual({<<"hello">>, <<"from git">>}, rt_rebar_server:info()),
    ?assertMatch({ok, #app_state{status = running, version = <<"1.0.0">>, pid = Pid}}
                   when is_pid(Pid), bc_gitops:get_app_status(rt_rebar)),
    ?assertMatch({_, _, "1.0.0"}, lists:keyfind(rt_rebar, 1, application:which_applications())),

    spec(Config, App, "1.0.0", Repo, "v1.0.0", "#{greeting => <<\"changed\">>, extra => 1}"),
    ok = bc_gitops:reconcile(),
    ?assertEqual({<<"hello">>, <<"changed">>}, rt_rebar_server:info()),
    ?assertEqual({[{greeting, <<"changed">>}], [{extra, 1}], []},
                 persistent_term:get(rt_rebar_config_change)),

    %% An env value changed by hand is drift: the next reconcile puts the
    %% spec's value back, even one after a reconcile with nothing to do
    %% (which is not given the state: the runtime's state token sees it).
    ok = bc_gitops:reconcile(),
    ok = application:set_env(rt_rebar, greeting, <<"by hand">>),
    ok = bc_gitops:reconcile(),
    ?assertEqual({<<"hello">>, <<"changed">>}, rt_rebar_server:info()),
    %% So is an app stopped by hand.
    ok = bc_gitops:reconcile(),
    ok = application:stop(rt_rebar),
    ok = bc_gitops:reconcile(),
    ?assertEqual({<<"hello">>, <<"changed">>}, rt_rebar_server:info()),

    write_app(Repo, App, rebar3, "2.0.0", "bonjour"),
    _ = commit(Repo, "v2"),
    _ = bc_gitops_test_util:git(Repo, ["tag", "v2.0.0"]),
    spec(Config, App, "2.0.0", Repo, "v2.0.0", "#{greeting => <<\"changed\">>}"),
    ok = bc_gitops:reconcile(),
    ?assertEqual({<<"bonjour">>, <<"changed">>}, rt_rebar_server:info()),
    ?assertMatch({_, _, "2.0.0"}, lists:keyfind(rt_rebar, 1, application:which_applications())),

    ok = file:del_dir_r(filename:join([?config(gitops, Config), "apps", App])),
    _ = commit(?config(gitops, Config), "remove"),
    ok = bc_gitops:reconcile(),
    ?assertEqual(false, lists:keyfind(rt_rebar, 1, application:which_applications())),
    ?assertEqual(false, code:is_loaded(rt_rebar_server)),
    ?assertEqual(non_existing, code:which(rt_rebar_server)),
    ?assertEqual({error, not_found}, bc_gitops:get_app_status(rt_rebar)).

makefile_app(Config) ->
    App = "rt_make",
    Repo = app_repo(Config, App, make),
    write_app(Repo, App, make, "0.1.0", "made"),
    _ = commit(Repo, "v0.1.0"),
    spec(Config, App, "0.1.0", Repo, "main", "#{greeting => <<\"by make\">>}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    ?assertEqual({<<"made">>, <<"by make">>}, rt_make_server:info()).

%% A hex package from a local hex repository, with a hex dependency chosen
%% by its requirement, deployed through a spec.
hex_package_with_dependency(Config) ->
    Dir = ?config(dir, Config),
    {Repo, Work, Key} = bc_gitops_hex_repo:init(filename:join(Dir, "hex")),
    Deps = [bc_gitops_hex_repo:release(Repo, Work, <<"hx_dep">>, V, [], rebar3)
            || V <- [<<"0.2.0">>, <<"0.2.5">>, <<"1.0.0">>]],
    bc_gitops_hex_repo:registry(Repo, <<"hx_dep">>, <<"hx_dep">>, Deps, Key),
    bc_gitops_hex_repo:registry(
      Repo, <<"hx_app">>, <<"hx_app">>,
      [bc_gitops_hex_repo:release(Repo, Work, <<"hx_app">>, <<"1.0.0">>,
                                  [{<<"hx_dep">>, <<"~> 0.2">>}], rebar3)], Key),
    {Httpd, Url} = bc_gitops_hex_repo:serve(Repo, filename:join(Dir, "httpd")),
    try
        write_file(filename:join([?config(gitops, Config), "apps", "hx_app", "app.config"]),
                   "#{name => hx_app, version => <<\"1.0.0\">>, source => #{type => hex}}.\n"),
        _ = commit(?config(gitops, Config), "hx_app from hex"),
        start(Config, #{hex_repo_url => Url, hex_repo_name => <<"test_repo">>,
                        hex_public_key => bc_gitops_hex_repo:public_pem(Key)}),
        ok = bc_gitops:reconcile(),
        ?assertEqual({hx_app, <<"0.2.5">>}, hx_app:hello()),
        ?assertMatch({_, _, "1.0.0"}, lists:keyfind(hx_app, 1, application:which_applications()))
    after
        inets:stop(httpd, Httpd)
    end.

%% v2 changes the server's state from an integer to a map in
%% code_change/3: the same process carries on with its state converted,
%% and a client calling it all along sees no failure.
hot_upgrade_keeps_pid_and_state(Config) ->
    Self = self(),
    ok = telemetry:attach(<<"hot">>, [bc_gitops, upgrade, stop],
                          fun(_, M, Meta, _) -> Self ! {upgraded, M, Meta} end, none),
    try
        {Repo, Pid} = deploy_counter_v1(Config),
        [1, 2, 3] = [rt_hot_server:bump() || _ <- lists:seq(1, 3)],
        Client = spawn_link(fun() -> client(0, 0) end),
        counter_app(Repo, "2.0.0", v2),
        _ = commit(Repo, "v2: the state becomes a map"),
        spec(Config, "rt_hot", "2.0.0", Repo, "main", "#{}"),
        ok = bc_gitops:reconcile(),
        Client ! {stop, self()},
        {Calls, Failures} = receive {client, C, F} -> {C, F} after 10000 -> ct:fail(client) end,
        ct:pal("client calls during the upgrade: ~p, failures: ~p", [Calls, Failures]),
        ?assertEqual(0, Failures),
        ?assert(Calls > 0),
        ?assertEqual(Pid, whereis(rt_hot_server)),
        ?assertEqual(#{count => 3 + Calls, version => 2}, rt_hot_server:state()),
        ?assertMatch({_, _, "2.0.0"}, lists:keyfind(rt_hot, 1, application:which_applications())),
        receive
            {upgraded, #{duration := _}, #{app := rt_hot, result := ok, path := hot,
                                           modules := Mods, suspended_us := Us}} ->
                ct:pal("hot upgrade: modules ~p, suspended ~p us", [Mods, Us]),
                ?assert(lists:member(rt_hot_server, Mods))
        after 1000 ->
            ct:fail(no_upgrade_event)
        end
    after
        telemetry:detach(<<"hot">>)
    end.

%% A tree of two gen_server workers and a gen_statem under a supervisor;
%% v2 changes one worker and the gen_statem, drops a module and adds one.
%% Every process keeps its pid, the changed ones convert their state, the
%% dropped module is gone and the added one loaded.
hot_upgrade_of_a_tree(Config) ->
    Repo = app_repo(Config, "rt_tree", make),
    tree_app(Repo, "1.0.0", v1),
    _ = commit(Repo, "v1"),
    spec(Config, "rt_tree", "1.0.0", Repo, "main", "#{}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    Pids = [whereis(N) || N <- [rt_tree_a, rt_tree_b, rt_tree_fsm]],
    ok = gen_statem:call(rt_tree_fsm, flip),
    ?assertEqual({on, 1}, gen_statem:call(rt_tree_fsm, get)),
    ?assertEqual(old, rt_tree_old:here()),
    tree_app(Repo, "2.0.0", v2),
    _ = commit(Repo, "v2"),
    spec(Config, "rt_tree", "2.0.0", Repo, "main", "#{}"),
    ok = bc_gitops:reconcile(),
    ?assertEqual(Pids, [whereis(N) || N <- [rt_tree_a, rt_tree_b, rt_tree_fsm]]),
    ?assertEqual({a, 2}, gen_server:call(rt_tree_a, get)),
    ?assertEqual({b, 1}, gen_server:call(rt_tree_b, get)),
    ?assertEqual({on, #{flips => 1}}, gen_statem:call(rt_tree_fsm, get)),
    ?assertEqual(false, code:is_loaded(rt_tree_old)),
    ?assertEqual(new, rt_tree_new:here()).

%% v2 ships an .appup: its instructions are followed in order, with the
%% Extra of {advanced, Extra} reaching code_change/3.
appup_is_followed(Config) ->
    Repo = app_repo(Config, "rt_up", make),
    Server = fun(CodeChange) -> server_src("rt_up_server", "7", CodeChange) end,
    App = fun(Vsn, Extra) -> app_src(Repo, "rt_up", Vsn, ["rt_up_sup", "rt_up_server" | Extra]) end,
    appup_app(Repo, "rt_up", "#{id => s, start => {rt_up_server, start_link, []}}"),
    write_file(filename:join([Repo, "src", "rt_up_server.erl"]),
               Server("code_change(_, S, _) -> {ok, S}.\n")),
    App("1.0.0", []),
    _ = commit(Repo, "v1"),
    spec(Config, "rt_up", "1.0.0", Repo, "main", "#{}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    Pid = whereis(rt_up_server),
    write_file(filename:join([Repo, "src", "rt_up_server.erl"]),
               Server("code_change(_OldVsn, N, to_v2) -> {ok, {v2, N}}.\n")),
    write_file(filename:join([Repo, "src", "rt_up_extra.erl"]),
               "-module(rt_up_extra).\n-export([x/0]).\nx() -> extra.\n"),
    write_file(filename:join([Repo, "src", "rt_up.appup"]),
               "{\"2.0.0\",\n"
               " [{\"1.0.0\", [{add_module, rt_up_extra},\n"
               "             {update, rt_up_server, {advanced, to_v2}},\n"
               "             {apply, {persistent_term, put, [rt_up_applied, true]}}]}],\n"
               " [{\"1.0.0\", []}]}.\n"),
    App("2.0.0", ["rt_up_extra"]),
    _ = commit(Repo, "v2 with an appup"),
    spec(Config, "rt_up", "2.0.0", Repo, "main", "#{}"),
    ok = bc_gitops:reconcile(),
    ?assertEqual(Pid, whereis(rt_up_server)),
    ?assertEqual({v2, 7}, gen_server:call(rt_up_server, get)),
    ?assertEqual(true, persistent_term:get(rt_up_applied)),
    ?assertEqual(extra, rt_up_extra:x()),
    ?assertMatch({_, _, "2.0.0"}, lists:keyfind(rt_up, 1, application:which_applications())).

%% A git revert of the spec takes the app back to 1.0.0, hot: the newer
%% code's code_change({down, Vsn}, ...) hands the state back as an integer
%% before the older code is loaded, as OTP's release handler does it.
hot_downgrade_by_git_revert(Config) ->
    Pid = counter_up_then_revert(Config, v2),
    ok = bc_gitops:reconcile(),
    ?assertEqual(Pid, whereis(rt_hot_server)),
    ?assertEqual(2, rt_hot_server:state()),
    ?assertEqual(3, rt_hot_server:bump()),
    ?assertMatch({_, _, "1.0.0"}, lists:keyfind(rt_hot, 1, application:which_applications())).

%% A code_change/3 that crashes: v2's own upgrade code is broken, so v1
%% stays: the same process, its state and its code, reported as a failed
%% upgrade (rolled_back) that the next tick does not try again.
crashing_code_change_keeps_v1(Config) ->
    Self = self(),
    ok = telemetry:attach(<<"crash">>, [bc_gitops, upgrade, stop],
                          fun(_, _, Meta, _) -> Self ! {upgraded, Meta} end, none),
    try
        {Repo, Pid} = deploy_counter_v1(Config),
        [1, 2] = [rt_hot_server:bump() || _ <- lists:seq(1, 2)],
        V1 = rt_hot_server:module_info(md5),
        counter_app(Repo, "2.0.0", crash),
        _ = commit(Repo, "v2 with a code_change that crashes"),
        spec(Config, "rt_hot", "2.0.0", Repo, "main", "#{}"),
        ?assertMatch({error, {out_of_sync, _}}, bc_gitops:reconcile()),
        ?assertEqual(Pid, whereis(rt_hot_server)),
        ?assertEqual(2, rt_hot_server:state()),
        ?assertEqual(3, rt_hot_server:bump()),
        ?assertEqual(V1, rt_hot_server:module_info(md5)),
        %% A module v1 had not loaded yet is not left at v2 either.
        ?assertEqual(1, rt_hot_helper:vsn()),
        ?assertMatch({_, _, "1.0.0"}, lists:keyfind(rt_hot, 1, application:which_applications())),
        ?assertMatch({rolled_back, {hot_upgrade_failed, {code_change, {Pid, rt_hot_server, _}}}},
                     failure(rt_hot)),
        ?assertMatch({ok, #app_state{version = <<"1.0.0">>, status = running}},
                     bc_gitops:get_app_status(rt_hot)),
        receive
            {upgraded, #{app := rt_hot, path := rolled_back, result := {error, _}}} -> ok
        after 1000 -> ct:fail(no_upgrade_event)
        end,
        %% The reconciler's own tick (the interval, on the test clock)
        %% leaves the broken version alone.
        {ok, #{last_reconcile := Before}} = bc_gitops:status(),
        timer:sleep(5),
        ok = bc_gitops_test_clock:advance(3600000),
        ok = ticked(Before, 200),
        receive {upgraded, Again} -> ct:fail({tried_again, Again})
        after 500 -> ok
        end,
        ?assertEqual(Pid, whereis(rt_hot_server))
    after
        telemetry:detach(<<"crash">>)
    end.

%% Three processes of one module, the middle one's code_change/3 crashes:
%% the neighbours, converted meanwhile, are converted back (by v2's
%% code_change({down, _})) before v1's code returns, so all three go on
%% with their v1 state. Then the same with 200 processes (number 100
%% crashes), which are suspended and changed from several processes at
%% once.
crashing_code_change_reverts_converted(Config) ->
    true = register(rt_cc_probe, self()),
    ok = reverts_converted(Config, "a", 3),
    ok = bc_gitops_runtime_default:remove(rt_cc),
    ok = reverts_converted(Config, "b", 200).

reverts_converted(Config, Tag, Count) ->
    Repo = app_repo(Config, "rt_cc_" ++ Tag, make),
    Crash = (Count + 1) div 2,
    Names = [list_to_atom("rt_cc_" ++ integer_to_list(N)) || N <- lists:seq(1, Count)],
    cc_app(Repo, "1.0.0", {v1, Count}),
    _ = commit(Repo, "v1"),
    spec(Config, "rt_cc", "1.0.0", Repo, "main", "#{}"),
    _ = bc_gitops:stop_reconciler(),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    Pids = [whereis(N) || N <- Names],
    cc_app(Repo, "2.0.0", {v2, Count}),
    _ = commit(Repo, "v2: code_change crashes on one state"),
    spec(Config, "rt_cc", "2.0.0", Repo, "main", "#{}"),
    ?assertMatch({error, {out_of_sync, _}}, bc_gitops:reconcile()),
    Probes = fun Collect(Acc) -> receive {rt_cc, What, N} -> Collect([{What, N} | Acc])
                                 after 0 -> lists:sort(Acc) end end([]),
    ct:pal("~p processes, code_change calls: ~p", [Count, length(Probes)]),
    %% Every other process was converted, and back.
    Others = lists:seq(1, Count) -- [Crash],
    ?assertEqual(lists:sort([{down, N} || N <- Others] ++ [{up, N} || N <- Others]), Probes),
    ?assertEqual(Pids, [whereis(N) || N <- Names]),
    ?assertEqual(lists:seq(1, Count), [gen_server:call(N, get) || N <- Names]),
    ?assertEqual(v1, rt_cc_srv:vsn()),
    ?assertMatch({rolled_back, {hot_upgrade_failed, {code_change, _}}}, failure(rt_cc)),
    ok.

%% A process that does not answer the suspend request in time: the hot
%% path is given up (the others resumed), and the app restarts at v2.
suspend_timeout_restarts(Config) ->
    Self = self(),
    ok = telemetry:attach(<<"slow">>, [bc_gitops, upgrade, stop],
                          fun(_, _, Meta, _) -> Self ! {upgraded, Meta} end, none),
    try
        {Repo, Pid} = deploy_counter_v1(Config),
        counter_app(Repo, "2.0.0", v2),
        _ = commit(Repo, "v2"),
        spec(Config, "rt_hot", "2.0.0", Repo, "main", "#{}"),
        %% Deaf to system messages until told: longer than the 5 s
        %% suspend timeout.
        ok = gen_server:cast(rt_hot_server, block),
        ok = bc_gitops:reconcile(),
        ?assertNotEqual(Pid, whereis(rt_hot_server)),
        ?assertEqual(#{count => 0, version => 2}, rt_hot_server:state()),
        ?assertMatch({_, _, "2.0.0"}, lists:keyfind(rt_hot, 1, application:which_applications())),
        receive
            {upgraded, #{app := rt_hot, path := restart, not_hot := {suspend, {Pid, _}}}} -> ok
        after 1000 -> ct:fail(no_upgrade_event)
        end
    after
        telemetry:detach(<<"slow">>)
    end.

%% A process still running v1's code from before a reload: soft_purge
%% cannot clear it, so v2 is not loaded hot; the app restarts at v2.
stuck_old_code_restarts(Config) ->
    Self = self(),
    ok = telemetry:attach(<<"stuck">>, [bc_gitops, upgrade, stop],
                          fun(_, _, Meta, _) -> Self ! {upgraded, Meta} end, none),
    try
        {Repo, Pid} = deploy_counter_v1(Config),
        Stuck = spawn(rt_hot_server, wait, []),
        %% Loading v1 again makes the first copy old code, with Stuck in it.
        {module, rt_hot_server} = code:load_abs(filename:rootname(code:which(rt_hot_server))),
        ?assert(erlang:check_process_code(Stuck, rt_hot_server)),
        counter_app(Repo, "2.0.0", v2),
        _ = commit(Repo, "v2"),
        spec(Config, "rt_hot", "2.0.0", Repo, "main", "#{}"),
        ok = bc_gitops:reconcile(),
        ?assertNotEqual(Pid, whereis(rt_hot_server)),
        ?assertEqual(#{count => 0, version => 2}, rt_hot_server:state()),
        receive
            {upgraded, #{app := rt_hot, path := restart,
                         not_hot := {old_code_in_use, rt_hot_server}}} -> ok
        after 1000 -> ct:fail(no_upgrade_event)
        end
    after
        telemetry:detach(<<"stuck">>)
    end.

%% v2's .appup updates the supervisor: {update, Sup, supervisor} gives
%% the running supervisor v2's child specs (its init/1 runs again), and an
%% apply starts the new child; the supervisor and the old child keep
%% their pids.
appup_updates_supervisor(Config) ->
    Repo = app_repo(Config, "rt_sv", make),
    Sup = fun(Children) ->
                  ["-module(rt_sv_sup).\n-behaviour(application).\n-behaviour(supervisor).\n"
                   "-export([start/2, stop/1, init/1]).\n"
                   "start(_, _) -> supervisor:start_link({local, ?MODULE}, ?MODULE, []).\n"
                   "stop(_) -> ok.\n"
                   "init([]) -> {ok, {#{}, [", Children, "]}}.\n"]
          end,
    Worker = fun(Mod) ->
                     ["-module(", Mod, ").\n-behaviour(gen_server).\n"
                      "-export([start_link/0, init/1, handle_call/3, handle_cast/2]).\n"
                      "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n"
                      "init([]) -> {ok, ?MODULE}.\n"
                      "handle_call(get, _, S) -> {reply, S, S}.\n"
                      "handle_cast(_, S) -> {noreply, S}.\n"]
             end,
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    write_file(filename:join(Repo, "Makefile"),
               "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
               "\tcp src/rt_sv.app.src ebin/rt_sv.app\n"
               "\tif [ -f src/rt_sv.appup ]; then cp src/rt_sv.appup ebin/; fi\n"),
    App = fun(Vsn, Mods) ->
                  W("rt_sv.app.src", ["{application, rt_sv, [{vsn, \"", Vsn, "\"}, {mod, {rt_sv_sup, []}},\n"
                                      " {modules, [", Mods, "]},\n"
                                      " {applications, [kernel, stdlib]}, {env, []}]}.\n"])
          end,
    W("rt_sv_one.erl", Worker("rt_sv_one")),
    W("rt_sv_sup.erl", Sup("#{id => one, start => {rt_sv_one, start_link, []}}")),
    App("1.0.0", "rt_sv_sup, rt_sv_one"),
    _ = commit(Repo, "v1"),
    spec(Config, "rt_sv", "1.0.0", Repo, "main", "#{}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    SupPid = whereis(rt_sv_sup),
    One = whereis(rt_sv_one),
    W("rt_sv_two.erl", Worker("rt_sv_two")),
    W("rt_sv_sup.erl", Sup("#{id => one, start => {rt_sv_one, start_link, []}},\n"
                           " #{id => two, start => {rt_sv_two, start_link, []}}")),
    W("rt_sv.appup", "{\"2.0.0\",\n"
                     " [{\"1.0.0\", [{add_module, rt_sv_two},\n"
                     "             {update, rt_sv_sup, supervisor},\n"
                     "             {apply, {supervisor, restart_child, [rt_sv_sup, two]}}]}],\n"
                     " [{\"1.0.0\", []}]}.\n"),
    App("2.0.0", "rt_sv_sup, rt_sv_one, rt_sv_two"),
    _ = commit(Repo, "v2: a second child"),
    spec(Config, "rt_sv", "2.0.0", Repo, "main", "#{}"),
    ok = bc_gitops:reconcile(),
    ?assertEqual(SupPid, whereis(rt_sv_sup)),
    ?assertEqual(One, whereis(rt_sv_one)),
    ?assertEqual(rt_sv_two, gen_server:call(rt_sv_two, get)),
    ?assertMatch([_, _], supervisor:which_children(rt_sv_sup)),
    ?assertMatch({ok, #{id := two}}, supervisor:get_childspec(rt_sv_sup, two)),
    ?assertMatch({_, _, "2.0.0"}, lists:keyfind(rt_sv, 1, application:which_applications())).

%% A module with -on_load (as NIF carriers have) is never reloaded hot.
on_load_module_restarts(Config) ->
    {Repo, Pid} = deploy_counter_v1(Config),
    counter_app(Repo, "2.0.0", v2),
    write_file(filename:join([Repo, "src", "rt_hot_nif.erl"]),
               "-module(rt_hot_nif).\n-on_load(init/0).\n-export([f/0]).\n"
               "init() -> ok.\nf() -> 1.\n"),
    _ = commit(Repo, "v2 with an on_load module"),
    spec(Config, "rt_hot", "2.0.0", Repo, "main", "#{}"),
    ok = bc_gitops:reconcile(),
    ?assertNotEqual(Pid, whereis(rt_hot_server)),
    ?assertEqual(1, rt_hot_nif:f()).

%% v2 must restart (it has an -on_load module) and does not start: v1 is
%% started again from its own build, and the failure is reported.
failed_restart_starts_old_version(Config) ->
    Self = self(),
    ok = telemetry:attach(<<"nostart">>, [bc_gitops, upgrade, stop],
                          fun(_, _, Meta, _) -> Self ! {upgraded, Meta} end, none),
    try
        {Repo, Pid} = deploy_counter_v1(Config),
        counter_app(Repo, "2.0.0", v2),
        write_file(filename:join([Repo, "src", "rt_hot_nif.erl"]),
                   "-module(rt_hot_nif).\n-on_load(init/0).\n-export([f/0]).\n"
                   "init() -> ok.\nf() -> 1.\n"),
        write_file(filename:join([Repo, "src", "rt_hot_app.erl"]),
                   "-module(rt_hot_app).\n-behaviour(application).\n"
                   "-export([start/2, stop/1]).\n"
                   "start(_, _) -> {error, v2_does_not_start}.\nstop(_) -> ok.\n"),
        _ = commit(Repo, "v2 that does not start"),
        spec(Config, "rt_hot", "2.0.0", Repo, "main", "#{}"),
        ?assertMatch({error, {out_of_sync, _}}, bc_gitops:reconcile()),
        ?assertNotEqual(Pid, whereis(rt_hot_server)),
        ?assertEqual(0, rt_hot_server:state()),
        ?assertMatch({_, _, "1.0.0"}, lists:keyfind(rt_hot, 1, application:which_applications())),
        ?assertMatch({rolled_back, {start_failed, _}}, failure(rt_hot)),
        ?assertEqual(false, code:is_loaded(rt_hot_nif)),
        receive
            {upgraded, #{app := rt_hot, path := rolled_back}} -> ok
        after 1000 -> ct:fail(no_upgrade_event)
        end
    after
        telemetry:detach(<<"nostart">>)
    end.

%% A revert to 1.0.0 when 2.0.0's code_change({down, _}, ...) crashes: on
%% the way down the older version is what must run, so the app restarts
%% at 1.0.0 (it is not kept at 2.0.0, as a failed upgrade keeps 1.0.0).
revert_without_way_down_restarts(Config) ->
    Pid = counter_up_then_revert(Config, up_only),
    ok = bc_gitops:reconcile(),
    ?assertNotEqual(Pid, whereis(rt_hot_server)),
    ?assertEqual(0, rt_hot_server:state()),
    ?assertMatch({_, _, "1.0.0"}, lists:keyfind(rt_hot, 1, application:which_applications())),
    ?assertMatch({ok, #app_state{version = <<"1.0.0">>}}, bc_gitops:get_app_status(rt_hot)).

%% A revert from 2.0.0 to 1.0.0 follows the down entry of the running
%% 2.0.0's .appup (as OTP does): code_change({down, _}, State, to_v1) runs
%% in the 2.0.0 code, then 1.0.0 is loaded; same pid, state handed back.
appup_downgrade(Config) ->
    Repo = app_repo(Config, "rt_dn", make),
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    appup_app(Repo, "rt_dn", "#{id => s, start => {rt_dn_srv, start_link, []}}"),
    Server = fun(CodeChange) -> server_src("rt_dn_srv", "7", CodeChange) end,
    App = fun(Vsn) -> app_src(Repo, "rt_dn", Vsn, ["rt_dn_sup", "rt_dn_srv"]) end,
    W("rt_dn_srv.erl", Server("code_change(_, S, _) -> {ok, S}.\n")),
    App("1.0.0"),
    _ = commit(Repo, "v1"),
    _ = bc_gitops_test_util:git(Repo, ["tag", "v1.0.0"]),
    %% Without the appup's Extra (a derived downgrade passes []), 2.0.0's
    %% code_change({down, _}, ...) has no clause: only the appup works.
    W("rt_dn_srv.erl", Server("code_change({down, _}, {v2, N}, to_v1) -> {ok, N};\n"
                              "code_change(_, N, to_v2) -> {ok, {v2, N}}.\n")),
    W("rt_dn.appup", "{\"2.0.0\",\n"
                     " [{\"1.0.0\", [{update, rt_dn_srv, {advanced, to_v2}}]}],\n"
                     " [{\"1.0.0\", [{update, rt_dn_srv, {advanced, to_v1}}]}]}.\n"),
    App("2.0.0"),
    _ = commit(Repo, "v2 with an appup both ways"),
    _ = bc_gitops_test_util:git(Repo, ["tag", "v2.0.0"]),
    spec(Config, "rt_dn", "1.0.0", Repo, "v1.0.0", "#{}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    Pid = whereis(rt_dn_srv),
    spec(Config, "rt_dn", "2.0.0", Repo, "v2.0.0", "#{}"),
    ok = bc_gitops:reconcile(),
    ?assertEqual({v2, 7}, gen_server:call(rt_dn_srv, get)),
    spec(Config, "rt_dn", "1.0.0", Repo, "v1.0.0", "#{}"),
    ok = bc_gitops:reconcile(),
    ?assertEqual(Pid, whereis(rt_dn_srv)),
    ?assertEqual(7, gen_server:call(rt_dn_srv, get)),
    ?assertMatch({_, _, "1.0.0"}, lists:keyfind(rt_dn, 1, application:which_applications())).

%% Two `update' instructions in a row are done as one: when the second
%% one's code_change crashes, the first one's processes are still
%% suspended, so they are converted back and v1 carries on hot (same
%% pids, same state).
appup_updates_are_one_step(Config) ->
    Repo = app_repo(Config, "rt_uu", make),
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    appup_app(Repo, "rt_uu", "#{id => a, start => {rt_uu_a, start_link, []}},\n"
                             "#{id => b, start => {rt_uu_b, start_link, []}}"),
    Server = fun(Mod, CodeChange) -> server_src(Mod, "1", CodeChange) end,
    App = fun(Vsn) -> app_src(Repo, "rt_uu", Vsn, ["rt_uu_sup", "rt_uu_a", "rt_uu_b"]) end,
    W("rt_uu_a.erl", Server("rt_uu_a", "code_change(_, S, _) -> {ok, S}.\n")),
    W("rt_uu_b.erl", Server("rt_uu_b", "code_change(_, S, _) -> {ok, S}.\n")),
    App("1.0.0"),
    _ = commit(Repo, "v1"),
    spec(Config, "rt_uu", "1.0.0", Repo, "main", "#{}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    Pids = [whereis(rt_uu_a), whereis(rt_uu_b)],
    W("rt_uu_a.erl", Server("rt_uu_a", "code_change({down, _}, {v2, S}, x) -> {ok, S};\n"
                                       "code_change(_, S, x) -> {ok, {v2, S}}.\n")),
    W("rt_uu_b.erl", Server("rt_uu_b", "code_change(_, _, x) -> erlang:error(boom).\n")),
    W("rt_uu.appup", "{\"2.0.0\",\n"
                     " [{\"1.0.0\", [{update, rt_uu_a, {advanced, x}},\n"
                     "             {update, rt_uu_b, {advanced, x}}]}],\n"
                     " [{\"1.0.0\", []}]}.\n"),
    App("2.0.0"),
    _ = commit(Repo, "v2: b's code_change crashes"),
    spec(Config, "rt_uu", "2.0.0", Repo, "main", "#{}"),
    ?assertMatch({error, {out_of_sync, _}}, bc_gitops:reconcile()),
    ?assertEqual(Pids, [whereis(rt_uu_a), whereis(rt_uu_b)]),
    ?assertEqual([1, 1], [gen_server:call(N, get) || N <- [rt_uu_a, rt_uu_b]]),
    ?assertMatch({_, _, "1.0.0"}, lists:keyfind(rt_uu, 1, application:which_applications())),
    ?assertMatch({rolled_back, {hot_upgrade_failed, {code_change, _}}}, failure(rt_uu)).

%% A gen_event manager with two handlers whose modules both change: the
%% manager runs code_change for each handler module (it converts only the
%% handlers of the module named), and keeps its pid.
gen_event_handlers_each_changed(Config) ->
    Repo = app_repo(Config, "rt_ev", make),
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    write_file(filename:join(Repo, "Makefile"),
               "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
               "\tcp src/rt_ev.app.src ebin/rt_ev.app\n"),
    W("rt_ev_sup.erl",
      "-module(rt_ev_sup).\n-behaviour(application).\n-behaviour(supervisor).\n"
      "-export([start/2, stop/1, init/1]).\n"
      "start(_, _) ->\n"
      "    {ok, Sup} = supervisor:start_link({local, ?MODULE}, ?MODULE, []),\n"
      "    ok = gen_event:add_handler(rt_ev, rt_ev_h1, []),\n"
      "    ok = gen_event:add_handler(rt_ev, rt_ev_h2, []),\n"
      "    {ok, Sup}.\nstop(_) -> ok.\n"
      "init([]) -> {ok, {#{}, [#{id => ev, start => {gen_event, start_link, [{local, rt_ev}]},\n"
      "                          modules => dynamic}]}}.\n"),
    Handler = fun(Mod, CodeChange) ->
                      ["-module(", Mod, ").\n-behaviour(gen_event).\n"
                       "-export([init/1, handle_event/2, handle_call/2, code_change/3]).\n"
                       "init([]) -> {ok, ", Mod, "}.\n"
                       "handle_event(_, S) -> {ok, S}.\n"
                       "handle_call(get, S) -> {ok, S, S}.\n", CodeChange]
              end,
    Version = fun(Vsn, CodeChange) ->
                      W("rt_ev.app.src",
                        ["{application, rt_ev, [{vsn, \"", Vsn, "\"}, {mod, {rt_ev_sup, []}},\n"
                         " {modules, [rt_ev_sup, rt_ev_h1, rt_ev_h2]},\n"
                         " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
                      W("rt_ev_h1.erl", Handler("rt_ev_h1", CodeChange)),
                      W("rt_ev_h2.erl", Handler("rt_ev_h2", CodeChange))
              end,
    Version("1.0.0", "code_change(_, S, _) -> {ok, S}.\n"),
    _ = commit(Repo, "v1"),
    spec(Config, "rt_ev", "1.0.0", Repo, "main", "#{}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    Manager = whereis(rt_ev),
    ?assertEqual(rt_ev_h1, gen_event:call(rt_ev, rt_ev_h1, get)),
    Version("2.0.0", "code_change(_, S, _) when is_atom(S) -> {ok, {v2, S}}.\n"),
    _ = commit(Repo, "v2: both handlers convert their state"),
    spec(Config, "rt_ev", "2.0.0", Repo, "main", "#{}"),
    ok = bc_gitops:reconcile(),
    ?assertEqual(Manager, whereis(rt_ev)),
    ?assertEqual({v2, rt_ev_h1}, gen_event:call(rt_ev, rt_ev_h1, get)),
    ?assertEqual({v2, rt_ev_h2}, gen_event:call(rt_ev, rt_ev_h2, get)).

%% An app built by make (an .appup in src/ goes to ebin/ too) whose
%% `<App>_sup' is its application callback and top supervisor, with the
%% child specs `Children' (text).
appup_app(Repo, App, Children) ->
    write_file(filename:join(Repo, "Makefile"),
               ["all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
                "\tcp src/", App, ".app.src ebin/", App, ".app\n"
                "\tif [ -f src/", App, ".appup ]; then cp src/", App, ".appup ebin/; fi\n"]),
    write_file(filename:join([Repo, "src", App ++ "_sup.erl"]),
               ["-module(", App, "_sup).\n-behaviour(application).\n-behaviour(supervisor).\n"
                "-export([start/2, stop/1, init/1]).\n"
                "start(_, _) -> supervisor:start_link({local, ?MODULE}, ?MODULE, []).\n"
                "stop(_) -> ok.\n"
                "init([]) -> {ok, {#{}, [", Children, "]}}.\n"]).

%% The .app.src of `App' at `Vsn', started by `<App>_sup'.
app_src(Repo, App, Vsn, Modules) ->
    write_file(filename:join([Repo, "src", App ++ ".app.src"]),
               ["{application, ", App, ", [{vsn, \"", Vsn, "\"}, {mod, {", App, "_sup, []}},\n"
                " {modules, [", lists:join(", ", Modules), "]},\n"
                " {applications, [kernel, stdlib]}, {env, []}]}.\n"]).

%% A registered gen_server `Mod' whose state starts as `Init' (text) and
%% answers `get' with it.
server_src(Mod, Init, CodeChange) ->
    ["-module(", Mod, ").\n-behaviour(gen_server).\n"
     "-export([start_link/0, init/1, handle_call/3, handle_cast/2, code_change/3]).\n"
     "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n"
     "init([]) -> {ok, ", Init, "}.\n"
     "handle_call(get, _, S) -> {reply, S, S}.\n"
     "handle_cast(_, S) -> {noreply, S}.\n", CodeChange].

%% The counter app deployed at 1.0.0 (tag v1.0.0), bumped twice, upgraded
%% hot to 2.0.0 of `Kind' (tag v2.0.0), then the spec commit reverted (not
%% reconciled yet). Returns the server's pid from 1.0.0.
counter_up_then_revert(Config, Kind) ->
    Repo = app_repo(Config, "rt_hot", make),
    counter_app(Repo, "1.0.0", v1),
    _ = commit(Repo, "v1"),
    _ = bc_gitops_test_util:git(Repo, ["tag", "v1.0.0"]),
    counter_app(Repo, "2.0.0", Kind),
    _ = commit(Repo, "v2"),
    _ = bc_gitops_test_util:git(Repo, ["tag", "v2.0.0"]),
    spec(Config, "rt_hot", "1.0.0", Repo, "v1.0.0", "#{}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    Pid = whereis(rt_hot_server),
    [1, 2] = [rt_hot_server:bump() || _ <- lists:seq(1, 2)],
    spec(Config, "rt_hot", "2.0.0", Repo, "v2.0.0", "#{}"),
    ok = bc_gitops:reconcile(),
    ?assertEqual(Pid, whereis(rt_hot_server)),
    ?assertEqual(#{count => 2, version => 2}, rt_hot_server:state()),
    _ = bc_gitops_test_util:git(?config(gitops, Config),
                                ["-c", "user.name=t", "-c", "user.email=t@t",
                                 "revert", "--no-edit", "HEAD"]),
    Pid.

%% The counter app at 1.0.0, deployed from git through a spec: its repo
%% and its server's pid.
deploy_counter_v1(Config) ->
    Repo = app_repo(Config, "rt_hot", make),
    counter_app(Repo, "1.0.0", v1),
    _ = commit(Repo, "v1"),
    spec(Config, "rt_hot", "1.0.0", Repo, "main", "#{}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    {Repo, whereis(rt_hot_server)}.

client(Calls, Failures) ->
    receive
        {stop, From} -> From ! {client, Calls, Failures}
    after 0 ->
        case catch rt_hot_server:bump() of
            N when is_integer(N) -> client(Calls + 1, Failures);
            _ -> client(Calls, Failures + 1)
        end
    end.

%% The tree app: rt_tree_a (changed in v2: state {a, 1} -> {a, 2}),
%% rt_tree_b (unchanged), rt_tree_fsm (a gen_statem whose data becomes a
%% map in v2), rt_tree_old (v1 only) and rt_tree_new (v2 only).
tree_app(Repo, Vsn, Kind) ->
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    _ = file:delete(filename:join([Repo, "src", "rt_tree_old.erl"])),
    _ = file:delete(filename:join([Repo, "src", "rt_tree_new.erl"])),
    write_file(filename:join(Repo, "Makefile"),
               "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
               "\tcp src/rt_tree.app.src ebin/rt_tree.app\n"),
    Extra = case Kind of v1 -> "rt_tree_old"; v2 -> "rt_tree_new" end,
    W("rt_tree.app.src", ["{application, rt_tree, [{vsn, \"", Vsn, "\"}, {mod, {rt_tree_sup, []}},\n"
                          " {modules, [rt_tree_sup, rt_tree_a, rt_tree_b, rt_tree_fsm, ", Extra, "]},\n"
                          " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W("rt_tree_sup.erl",
      "-module(rt_tree_sup).\n-behaviour(application).\n-behaviour(supervisor).\n"
      "-export([start/2, stop/1, init/1]).\n"
      "start(_, _) -> supervisor:start_link({local, ?MODULE}, ?MODULE, []).\nstop(_) -> ok.\n"
      "init([]) -> {ok, {#{}, [#{id => a, start => {rt_tree_a, start_link, []}},\n"
      "                        #{id => b, start => {rt_tree_b, start_link, []}},\n"
      "                        #{id => f, start => {rt_tree_fsm, start_link, []}}]}}.\n"),
    Server = fun(Mod, Init, CodeChange) ->
                     ["-module(", Mod, ").\n-behaviour(gen_server).\n"
                      "-export([start_link/0, init/1, handle_call/3, handle_cast/2, code_change/3]).\n"
                      "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n"
                      "init([]) -> {ok, ", Init, "}.\n"
                      "handle_call(get, _, S) -> {reply, S, S}.\n"
                      "handle_cast(_, S) -> {noreply, S}.\n", CodeChange]
             end,
    case Kind of
        v1 ->
            W("rt_tree_a.erl", Server("rt_tree_a", "{a, 1}", "code_change(_, S, _) -> {ok, S}.\n")),
            W("rt_tree_old.erl", "-module(rt_tree_old).\n-export([here/0]).\nhere() -> old.\n"),
            W("rt_tree_fsm.erl", fsm("1", "0", "code_change(_, St, D, _) -> {ok, St, D}.\n"));
        v2 ->
            W("rt_tree_a.erl", Server("rt_tree_a", "{a, 2}",
                                      "code_change(_, {a, 1}, _) -> {ok, {a, 2}}.\n")),
            W("rt_tree_new.erl", "-module(rt_tree_new).\n-export([here/0]).\nhere() -> new.\n"),
            W("rt_tree_fsm.erl", fsm("2", "#{flips => 0}",
                                     "code_change(_, St, N, _) when is_integer(N) ->\n"
                                     "    {ok, St, #{flips => N}}.\n"))
    end,
    W("rt_tree_b.erl", Server("rt_tree_b", "{b, 1}", "code_change(_, S, _) -> {ok, S}.\n")).

fsm(Vsn, Data, CodeChange) ->
    ["-module(rt_tree_fsm).\n-behaviour(gen_statem).\n-vsn(", Vsn, ").\n"
     "-export([start_link/0, init/1, callback_mode/0, handle_event/4, code_change/4]).\n"
     "start_link() -> gen_statem:start_link({local, ?MODULE}, ?MODULE, [], []).\n"
     "callback_mode() -> handle_event_function.\n"
     "init([]) -> {ok, off, ", Data, "}.\n"
     "handle_event({call, From}, flip, off, N) when is_integer(N) ->\n"
     "    {next_state, on, N + 1, [{reply, From, ok}]};\n"
     "handle_event({call, From}, get, St, D) -> {keep_state_and_data, [{reply, From, {St, D}}]}.\n",
     CodeChange].

%% A counter app built with make. v1 keeps an integer; v2 keeps a map and
%% converts in code_change/3; `crash' is v2 whose code_change/3 crashes.
counter_app(Repo, Vsn, Kind) ->
    write_file(filename:join(Repo, "Makefile"),
               "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
               "\tcp src/rt_hot.app.src ebin/rt_hot.app\n"),
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    W("rt_hot.app.src", ["{application, rt_hot, [{vsn, \"", Vsn, "\"}, {mod, {rt_hot_app, []}},\n"
                         " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W("rt_hot_app.erl", "-module(rt_hot_app).\n-behaviour(application).\n"
                        "-export([start/2, stop/1]).\n"
                        "start(_, _) -> rt_hot_sup:start_link().\nstop(_) -> ok.\n"),
    W("rt_hot_sup.erl", "-module(rt_hot_sup).\n-behaviour(supervisor).\n"
                        "-export([start_link/0, init/1]).\n"
                        "start_link() -> supervisor:start_link({local, ?MODULE}, ?MODULE, []).\n"
                        "init([]) -> {ok, {#{}, [#{id => s, start => {rt_hot_server, start_link, []}}]}}.\n"),
    Common = "-module(rt_hot_server).\n-behaviour(gen_server).\n"
             "-export([start_link/0, bump/0, state/0, wait/0, init/1, handle_call/3, handle_cast/2,\n"
             "         code_change/3]).\n"
             "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n"
             "bump() -> gen_server:call(?MODULE, bump).\n"
             "state() -> gen_server:call(?MODULE, state).\n"
             "wait() -> receive stop -> ok end.\n"
             "handle_cast(block, S) -> receive unblock -> {noreply, S} end;\n"
             "handle_cast(_, S) -> {noreply, S}.\n",
    Body = case Kind of
               v1 -> "init([]) -> {ok, 0}.\n"
                     "handle_call(bump, _, N) -> {reply, N + 1, N + 1};\n"
                     "handle_call(state, _, N) -> {reply, N, N}.\n"
                     "code_change(_, S, _) -> {ok, S}.\n";
               _ -> ["init([]) -> {ok, #{count => 0, version => 2}}.\n"
                     "handle_call(bump, _, #{count := N} = S) -> {reply, N + 1, S#{count := N + 1}};\n"
                     "handle_call(state, _, S) -> {reply, S, S}.\n",
                     case Kind of
                         v2 -> "code_change({down, _}, #{count := N}, _) -> {ok, N};\n"
                               "code_change(_, N, _) when is_integer(N) ->\n"
                               "    {ok, #{count => N, version => 2}}.\n";
                         crash -> "code_change(_, _, _) -> erlang:error(boom).\n";
                         up_only -> "code_change({down, _}, _, _) -> erlang:error(no_way_down);\n"
                                    "code_change(_, N, _) when is_integer(N) ->\n"
                                    "    {ok, #{count => N, version => 2}}.\n"
                     end]
           end,
    W("rt_hot_server.erl", [Common, Body]),
    %% A module nothing calls before the upgrade (so not loaded yet).
    W("rt_hot_helper.erl", ["-module(rt_hot_helper).\n-export([vsn/0]).\nvsn() -> ",
                            case Kind of v1 -> "1"; _ -> "2" end, ".\n"]).

%% Count instances of one gen_server module under a supervisor, with
%% states 1..Count. v2's code_change/3 crashes on the middle one, converts
%% the others to {v2, N} and back on {down, _}; each call is reported to
%% rt_cc_probe.
cc_app(Repo, Vsn, {Kind, Count}) ->
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    write_file(filename:join(Repo, "Makefile"),
               "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
               "\tcp src/rt_cc.app.src ebin/rt_cc.app\n"),
    W("rt_cc.app.src", ["{application, rt_cc, [{vsn, \"", Vsn, "\"}, {mod, {rt_cc_sup, []}},\n"
                        " {modules, [rt_cc_sup, rt_cc_srv]},\n"
                        " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W("rt_cc_sup.erl",
      ["-module(rt_cc_sup).\n-behaviour(application).\n-behaviour(supervisor).\n"
      "-export([start/2, stop/1, init/1]).\n"
      "start(_, _) -> supervisor:start_link({local, ?MODULE}, ?MODULE, []).\nstop(_) -> ok.\n"
      "init([]) -> {ok, {#{}, [#{id => N, start => {rt_cc_srv, start_link, [N]},\n"
      "                          modules => [rt_cc_srv]} || N <- lists:seq(1, ",
      integer_to_list(Count), ")]}}.\n"]),
    CodeChange = case Kind of
                     v1 -> "vsn() -> v1.\ncode_change(_, S, _) -> {ok, S}.\n";
                     v2 -> ["vsn() -> v2.\n"
                           "code_change({down, _}, {v2, N}, _) -> probe(down, N), {ok, N};\n"
                           "code_change(_, ", integer_to_list((Count + 1) div 2),
                           ", _) -> erlang:error(boom);\n"
                           "code_change(_, N, _) -> probe(up, N), {ok, {v2, N}}.\n"
                           "probe(What, N) -> catch rt_cc_probe ! {rt_cc, What, N}.\n"]
                 end,
    W("rt_cc_srv.erl",
      ["-module(rt_cc_srv).\n-behaviour(gen_server).\n"
       "-export([start_link/1, vsn/0, init/1, handle_call/3, handle_cast/2, code_change/3]).\n"
       "start_link(N) -> gen_server:start_link({local, list_to_atom(\"rt_cc_\" ++ integer_to_list(N))},\n"
       "                                       ?MODULE, N, []).\n"
       "init(N) -> {ok, N}.\n"
       "handle_call(get, _, S) -> {reply, S, S}.\n"
       "handle_cast(_, S) -> {noreply, S}.\n", CodeChange]).

mix_app(Config) ->
    Repo = app_repo(Config, "rt_mix", mix),
    write_mix_app(Repo, "elixir"),
    _ = commit(Repo, "mix app"),
    spec(Config, "rt_mix", "1.0.0", Repo, "main", "#{greeting => <<\"from mix\">>}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    ?assertEqual({<<"elixir">>, <<"from mix">>}, gen_server:call('Elixir.RtMix.Server', info)),
    ?assertMatch({_, _, "1.0.0"}, lists:keyfind(rt_mix, 1, application:which_applications())).

%% A rebar3 app whose own dependency comes from another git repository.
app_with_git_dependency(Config) ->
    Dep = app_repo(Config, "rt_dep", rebar3),
    write_file(filename:join([Dep, "src", "rt_dep.app.src"]),
               "{application, rt_dep, [{vsn, \"0.1.0\"}, {applications, [kernel, stdlib]}]}.\n"),
    write_file(filename:join([Dep, "src", "rt_dep_word.erl"]),
               "-module(rt_dep_word).\n-export([word/0]).\nword() -> <<\"from the dependency\">>.\n"),
    write_file(filename:join(Dep, "rebar.config"), "{erl_opts, []}.\n"),
    _ = commit(Dep, "dep"),
    App = "rt_withdep",
    Repo = app_repo(Config, App, rebar3),
    write_app(Repo, App, rebar3, "1.0.0", "unused"),
    write_file(filename:join(Repo, "rebar.config"),
               ["{deps, [{rt_dep, {git, \"file://", Dep, "\", {branch, \"main\"}}}]}.\n"]),
    _ = commit(Repo, "with a git dependency"),
    spec(Config, App, "1.0.0", Repo, "main", "#{}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    ?assertEqual(<<"from the dependency">>, rt_dep_word:word()),
    %% Loaded from the dependency's build in the app's workspace.
    ?assertNotEqual(nomatch, string:find(code:which(rt_dep_word), "/workspace/rt_withdep/")).

failed_build_output(Config) ->
    App = "rt_broken",
    Repo = app_repo(Config, App, rebar3),
    write_app(Repo, App, rebar3, "1.0.0", "x"),
    write_file(filename:join([Repo, "src", "rt_broken_bad.erl"]),
               "-module(rt_broken_bad).\n-export([f/0]).\nf() -> this is not erlang.\n"),
    _ = commit(Repo, "broken"),
    spec(Config, App, "1.0.0", Repo, "main", "#{}"),
    start(Config, #{}),
    {build_failed, rebar3, {exit_status, _, Tail}} = failure(rt_broken),
    ct:pal("build error tail:~n~ts", [Tail]),
    ?assertNotEqual(nomatch, binary:match(Tail, <<"rt_broken_bad.erl">>)),
    ?assertEqual(false, lists:keyfind(rt_broken, 1, application:which_applications())).

hung_build_is_killed(Config) ->
    App = "rt_hang",
    Repo = app_repo(Config, App, make),
    Marker = integer_to_list(900000 + erlang:unique_integer([positive]) rem 99999),
    write_file(filename:join(Repo, "Makefile"), ["all:\n\tsleep ", Marker, "\n"]),
    write_file(filename:join([Repo, "src", "rt_hang.app.src"]), "{application, rt_hang, []}.\n"),
    _ = commit(Repo, "hangs"),
    spec(Config, App, "1", Repo, "main", "#{}"),
    T0 = erlang:monotonic_time(millisecond),
    start(Config, #{build_timeout => 2000}),
    ?assertMatch({build_failed, make, {timeout, _}}, failure(rt_hang)),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 30000),
    timer:sleep(200),
    ?assertEqual([], [L || L <- processes_args(), string:find(L, "sleep " ++ Marker) =/= nomatch]).

%% After a restart of bc_gitops, an app at the same version starts from its
%% existing build: the app's repository is gone by then, so a fetch would
%% fail.
restart_uses_existing_build(Config) ->
    App = "rt_again",
    Repo = app_repo(Config, App, make),
    write_app(Repo, App, make, "1.0.0", "again"),
    _ = commit(Repo, "v1"),
    spec(Config, App, "1.0.0", Repo, "main", "#{}"),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    ok = application:stop(rt_again),
    ok = application:stop(bc_gitops),
    ok = file:del_dir_r(Repo),
    {ok, _} = application:ensure_all_started(bc_gitops),
    start(Config, #{}),
    ok = bc_gitops:reconcile(),
    ?assertEqual({<<"again">>, undefined}, rt_again_server:info()).

%%% Helpers

%% Starts a reconciler and waits for its first reconcile to end.
start(Config, Extra) ->
    {ok, _} = bc_gitops:start_reconciler(
                maps:merge(#{repo_url => ?config(gitops, Config),
                             local_path => filename:join(?config(dir, Config), "state"),
                             reconcile_interval => 3600000, clock => bc_gitops_test_clock},
                           Extra)),
    wait_reconciled(20000).

%% Waits for a reconcile that ends after `Before' (ms since the epoch).
ticked(_Before, 0) ->
    ct:fail(no_reconcile_after_tick);
ticked(Before, N) ->
    case bc_gitops:status() of
        {ok, #{status := S, last_reconcile := At}} when S =/= reconciling, At > Before -> ok;
        _ -> timer:sleep(50), ticked(Before, N - 1)
    end.

%% Why the app's last action failed, from status/0.
failure(App) ->
    {ok, #{app_errors := #{App := #{reason := Why}}}} = bc_gitops:status(),
    Why.

app_repo(Config, App, _Tool) ->
    Repo = filename:join(?config(dir, Config), App),
    ok = bc_gitops_test_util:init_repo(Repo),
    Repo.

spec(Config, App, Version, Repo, Ref, Env) ->
    write_file(filename:join([?config(gitops, Config), "apps", App, "app.config"]),
               ["#{name => ", App, ", version => <<\"", Version, "\">>,\n",
                "  source => #{type => git, url => <<\"", Repo, "\">>, ref => <<\"", Ref, "\">>},\n",
                "  env => ", Env, "}.\n"]),
    _ = commit(?config(gitops, Config), "spec " ++ App ++ " " ++ Version).

%% An OTP app: an application callback (with config_change/3), a
%% supervisor, and a gen_server answering {Word, greeting env}.
write_app(Repo, App, Tool, Vsn, Word) ->
    Src = filename:join(Repo, "src"),
    W = fun(Name, Text) -> write_file(filename:join(Src, Name), Text) end,
    W(App ++ ".app.src",
      ["{application, ", App, ", [{vsn, \"", Vsn, "\"}, {mod, {", App, "_app, []}},\n",
       " {applications, [kernel, stdlib]}, {modules, [", App, "_app, ", App, "_sup, ",
       App, "_server]}, {registered, []}, {env, []}]}.\n"]),
    W(App ++ "_app.erl",
      ["-module(", App, "_app).\n-behaviour(application).\n",
       "-export([start/2, stop/1, config_change/3]).\n",
       "start(_, _) -> ", App, "_sup:start_link().\nstop(_) -> ok.\n",
       "config_change(C, N, R) -> persistent_term:put(", App, "_config_change, {C, N, R}), ok.\n"]),
    W(App ++ "_sup.erl",
      ["-module(", App, "_sup).\n-behaviour(supervisor).\n-export([start_link/0, init/1]).\n",
       "start_link() -> supervisor:start_link({local, ?MODULE}, ?MODULE, []).\n",
       "init([]) -> {ok, {#{}, [#{id => s, start => {", App, "_server, start_link, []}}]}}.\n"]),
    W(App ++ "_server.erl",
      ["-module(", App, "_server).\n-behaviour(gen_server).\n",
       "-export([start_link/0, info/0, init/1, handle_call/3, handle_cast/2]).\n",
       "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n",
       "info() -> gen_server:call(?MODULE, info).\n",
       "init([]) -> {ok, none}.\n",
       "handle_call(info, _, S) -> {reply, {<<\"", Word, "\">>, application:get_env(", App,
       ", greeting, undefined)}, S}.\n",
       "handle_cast(_, S) -> {noreply, S}.\n"]),
    case Tool of
        rebar3 -> write_file(filename:join(Repo, "rebar.config"), "{erl_opts, [debug_info]}.\n");
        make -> write_file(filename:join(Repo, "Makefile"),
                           ["all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n",
                            "\tcp src/", App, ".app.src ebin/", App, ".app\n"])
    end.

processes_args() ->
    Port = open_port({spawn_executable, os:find_executable("ps")},
                     [{args, ["-eo", "args"]}, exit_status, binary, stderr_to_stdout]),
    Out = collect(Port, <<>>),
    string:split(binary_to_list(Out), "\n", all).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, _}} -> Acc
    end.

%% An Elixir project built with mix (MIX_ENV=prod), started on this node.
write_mix_app(Repo, Word) ->
    write_file(filename:join(Repo, "mix.exs"),
               "defmodule RtMix.MixProject do\n  use Mix.Project\n"
               "  def project, do: [app: :rt_mix, version: \"1.0.0\", elixir: \"~> 1.14\", deps: []]\n"
               "  def application, do: [mod: {RtMix.App, []}, extra_applications: [:logger]]\n"
               "end\n"),
    write_file(filename:join([Repo, "lib", "rt_mix.ex"]),
               ["defmodule RtMix.App do\n  use Application\n"
                "  def start(_, _), do: Supervisor.start_link([RtMix.Server], strategy: :one_for_one)\n"
                "end\n"
                "defmodule RtMix.Server do\n  use GenServer\n"
                "  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)\n"
                "  def init(s), do: {:ok, s}\n"
                "  def handle_call(:info, _, s), do: {:reply, {\"", Word,
                "\", Application.get_env(:rt_mix, :greeting)}, s}\n"
                "end\n"]).
