%%% Isolated-VM apps (`isolation => vm'): real apps built from git with
%%% make, each run in a guest BEAM node that bc_gitops starts with `peer'.
%%% A guest app runs and answers (its custom health check runs in the
%%% guest); a killed guest leaves the host untouched and is healed, with
%%% the repair backoff; a guest over its memory limit dies and is reported
%%% (a process over its heap limit only loses that process); a hot upgrade
%%% in a guest keeps its process and state; a change of isolation moves
%%% the app; guests stop with bc_gitops, and die with a host killed
%%% outright.
-module(bc_gitops_vm_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([guest_command_line/1, guest_that_cannot_boot_fails_its_deploy/1, guest_app_runs/1,
         killed_guest_is_healed_with_backoff/1, guest_over_memory_limit_dies/1,
         hot_upgrade_in_guest_keeps_process_and_state/1, isolation_change_moves_the_app/1,
         guests_stop_with_bc_gitops/1, guest_dies_with_a_killed_host/1,
         encrypted_env_reaches_the_guest/1]).

-import(bc_gitops_test_util, [commit/2, write_file/2, advance_and_wait/1]).
-import(bc_gitops_test_apps, [make_repo/2, commit_spec/5, start/2, attach_events/2,
                              collect_events/0, wait_healthy/2, http_get/1, free_port/0]).

all() ->
    [guest_command_line, guest_that_cannot_boot_fails_its_deploy, guest_app_runs,
     killed_guest_is_healed_with_backoff, guest_over_memory_limit_dies,
     hot_upgrade_in_guest_keeps_process_and_state, isolation_change_moves_the_app,
     guests_stop_with_bc_gitops, guest_dies_with_a_killed_host,
     encrypted_env_reaches_the_guest].

%% Guests are distributed nodes: this node must be one too.
init_per_suite(Config) ->
    case erlang:is_alive() of
        true ->
            [{started_dist, false} | Config];
        false ->
            Epmd = open_port({spawn_executable, os:find_executable("epmd")},
                             [{args, ["-daemon"]}, exit_status]),
            receive {Epmd, {exit_status, 0}} -> ok after 10000 -> ct:fail(epmd) end,
            {ok, _} = net_kernel:start([list_to_atom("bc_gitops_vm_ct_" ++ os:getpid()),
                                        shortnames]),
            [{started_dist, true} | Config]
    end.

end_per_suite(Config) ->
    _ = [net_kernel:stop() || ?config(started_dist, Config)],
    ok.

init_per_testcase(_Case, Config) ->
    bc_gitops_test_apps:init_case("ct_vm", Config).

end_per_testcase(_Case, Config) ->
    bc_gitops_test_apps:end_case(<<"vm">>, Config).

%% The command line of a guest: prlimit --data of memory_limit in front of
%% this node's own emulator; +S, +hmax (a quarter of the limit, in words),
%% hidden, bc_gitops's ebin on its path, extra_args last; a name from
%% node_prefix, the crash dump where bc_gitops reads it. A node that does
%% not run distributed cannot have guests, and says so.
guest_command_line(Config) ->
    Dir = ?config(dir, Config),
    {ok, #{name := Name, host := Host, exec := {Prlimit, ExecArgs}, args := Args, env := Env,
           connection := standard_io}} =
        bc_gitops_vm_command:peer_options(
          some_app, #{memory_limit => 256, scheduler_limit => 2, node_prefix => <<"px">>,
                      extra_args => [<<"+A">>, <<"4">>]}, Dir),
    ?assertEqual(os:find_executable("prlimit"), Prlimit),
    ?assertMatch(["--data=268435456", "--", _], ExecArgs),
    ?assertEqual("erlexec", filename:basename(lists:last(ExecArgs))),
    ?assertMatch("px-" ++ _, Name),
    ?assertEqual(Host, lists:last(string:split(atom_to_list(node()), "@"))),
    Hmax = integer_to_list(256 * 1024 * 1024 div 4 div erlang:system_info(wordsize)),
    ?assertMatch(["-hidden", "-setcookie", _, "-pa", _, "+S", "2:2", "+hmax", Hmax, "+hmaxk", "true",
                  "+A", "4"], Args),
    ?assertEqual(filename:dirname(code:which(bc_gitops_lifecycle)), lists:nth(5, Args)),
    ?assertEqual(bc_gitops_vm_command:dump_file(Dir, Name ++ "@" ++ Host),
                 proplists:get_value("ERL_CRASH_DUMP", Env)),
    %% Without limits: the emulator itself, the app's name as the prefix.
    {ok, #{name := "plain-" ++ _, exec := {Erlexec, []}, args := ["-hidden", _, _, _, _]}} =
        bc_gitops_vm_command:peer_options(plain, undefined, Dir),
    ?assertEqual(lists:last(ExecArgs), Erlexec),
    {ok, Local, _} = peer:start(#{connection => standard_io,
                                  args => ["-pa", filename:dirname(code:which(bc_gitops_lifecycle))]}),
    try
        ?assertMatch({error, {not_distributed, _}},
                     peer:call(Local, bc_gitops_vm_command, peer_options, [plain, undefined, Dir]))
    after
        peer:stop(Local)
    end.

%% A memory_limit too small for a BEAM node to boot: the deploy fails at
%% once with why (the emulator's exit status), reported for that app, and
%% is retried with backoff; nothing is left running.
guest_that_cannot_boot_fails_its_deploy(Config) ->
    Repo = vm_app(Config, "vm_tiny", "1.0.0", counter_v1()),
    commit_spec(Config, "vm_tiny", "1.0.0", Repo,
         ["isolation => vm, vm_config => #{memory_limit => 16},\n"
          "  env => #{port => ", integer_to_list(free_port()), "}"]),
    start(Config, #{reconcile_interval => 3600000, backoff_base => 60000}),
    {ok, #{app_errors := #{vm_tiny := #{attempts := 1,
                                        reason := {vm_boot_failed, {exit_status, Status}}}},
           guests := Guests}} = bc_gitops:status(),
    ?assert(Status > 0),
    ?assertEqual(#{}, Guests),
    ?assertEqual({error, not_found}, bc_gitops:get_app_status(vm_tiny)),
    ?assertMatch({error, {out_of_sync, #{waiting := [{vm_tiny, {backoff, 1, _}}]}}},
                 bc_gitops:reconcile()).

%% A guest app runs in a node of its own, named in get_app_status/1 and
%% status(): not in this node; +S from scheduler_limit; its http port
%% answers on 127.0.0.1; its custom health check (a module only the guest
%% has) runs there. Removing it stops its guest.
guest_app_runs(Config) ->
    Port = free_port(),
    Repo = vm_app(Config, "vm_web", "1.0.0", counter_v1()),
    commit_spec(Config, "vm_web", "1.0.0", Repo,
         ["isolation => vm, vm_config => #{scheduler_limit => 1, memory_limit => 512,\n"
          "                                 node_prefix => <<\"vmweb\">>},\n"
          "  env => #{port => ", integer_to_list(Port), "},\n"
          "  health => #{type => custom, module => vm_web_health, interval => 200}"]),
    start(Config, #{reconcile_interval => 3600000, http => #{port => 0}}),
    {ok, #app_state{status = running, isolation = vm, node = Node, pid = Top,
                    vm_config = #{memory_limit := 512}}} = bc_gitops:get_app_status(vm_web),
    ?assertNotEqual(node(), Node),
    ?assertMatch("vmweb-" ++ _, atom_to_list(Node)),
    ?assertEqual(Node, node(Top)),
    ?assertNot(lists:keymember(vm_web, 1, application:which_applications())),
    ?assertMatch({vm_web, _, "1.0.0"},
                 lists:keyfind(vm_web, 1, erpc:call(Node, application, which_applications, []))),
    ?assertEqual(1, erpc:call(Node, erlang, system_info, [schedulers_online])),
    %% The guest is hidden: it is not one of this node's visible nodes.
    ?assertNot(lists:member(Node, nodes())),
    ?assertEqual({200, <<"1.0.0">>}, http_get(Port)),
    ok = wait_healthy(vm_web, 50),
    %% The status page and the JSON API name the guest node too.
    {ok, HttpPort} = bc_gitops:http_port(),
    Face = "http://127.0.0.1:" ++ integer_to_list(HttpPort),
    NodeText = atom_to_list(Node),
    {ok, {{_, 200, _}, _, Page}} = httpc:request(Face ++ "/"),
    ?assertNotEqual(nomatch, string:find(Page, "in guest " ++ NodeText)),
    {ok, {{_, 200, _}, _, Api}} = httpc:request(Face ++ "/api/apps/vm_web"),
    ?assertNotEqual(nomatch, string:find(Api, "\"node\":\"" ++ NodeText ++ "\"")),
    {ok, #{guests := #{vm_web := #{node := Node, status := up, os_pid := OsPid}},
           status := synced}} = bc_gitops:status(),
    ?assert(os_alive(OsPid)),
    %% The custom check runs in the guest: the module is not even loaded here.
    ?assertEqual(false, code:is_loaded(vm_web_health)),
    %% The limits, as the guest's OS process and emulator have them.
    ?assertEqual({512 * 1024 * 1024, 512 * 1024 * 1024}, data_limit(OsPid)),
    ?assertMatch(#{size := Words, kill := true} when Words =:= 512 * 1024 * 1024 div 4 div 8,
                 erpc:call(Node, erlang, system_info, [max_heap_size])),

    %% A new env is set in the guest, and its config_change/3 runs there.
    commit_spec(Config, "vm_web", "1.0.0", Repo,
         ["isolation => vm, vm_config => #{scheduler_limit => 1, memory_limit => 512,\n"
          "                                 node_prefix => <<\"vmweb\">>},\n"
          "  env => #{port => ", integer_to_list(Port), ", greeting => <<\"hi\">>},\n"
          "  health => #{type => custom, module => vm_web_health, interval => 200}"]),
    ok = bc_gitops:reconcile(),
    ?assertEqual({ok, <<"hi">>}, erpc:call(Node, application, get_env, [vm_web, greeting])),
    ?assertEqual(undefined, application:get_env(vm_web, greeting)),
    {ok, #app_state{node = Node, pid = Top, env = #{greeting := <<"hi">>}}} =
        bc_gitops:get_app_status(vm_web),

    ok = file:del_dir_r(filename:join([?config(gitops, Config), "apps", "vm_web"])),
    _ = commit(?config(gitops, Config), "remove vm_web"),
    ok = bc_gitops:reconcile(),
    ?assertEqual({error, not_found}, bc_gitops:get_app_status(vm_web)),
    ok = wait_os_gone(OsPid, 100),
    ?assertEqual(none, bc_gitops_vm:lookup(vm_web)),
    {ok, #{guests := Guests}} = bc_gitops:status(),
    ?assertEqual(#{}, Guests).

%% An encrypted env value of a guest app: the guest has no age identity,
%% so the host decrypts it and the guest's app gets the plaintext; the
%% status shows the ciphertext only, and the next reconcile sees nothing
%% to do. Changed by hand in the guest, it is seen (as `{age, changed}',
%% never the live value) and set back.
encrypted_env_reaches_the_guest(Config) ->
    Dir = ?config(dir, Config),
    {Key, Recipient} = bc_gitops_test_keys:age_key(Dir, "node.key"),
    Armored = bc_gitops_test_keys:age_encrypt(Dir, Recipient, <<"guest-canary-7">>),
    Repo = vm_app(Config, "vm_sec", "1.0.0", counter_v1()),
    commit_spec(Config, "vm_sec", "1.0.0", Repo,
         ["isolation => vm,
"
          "  env => #{port => ", integer_to_list(free_port()), ",
"
          "           password => {age, ", io_lib:format("~p", [Armored]), "}}"]),
    start(Config, #{reconcile_interval => 3600000, age_identity => Key}),
    {ok, #app_state{node = Node, env = #{password := {age, Armored}}}} =
        bc_gitops:get_app_status(vm_sec),
    ?assertEqual({ok, <<"guest-canary-7">>}, erpc:call(Node, application, get_env, [vm_sec, password])),
    ?assertEqual(undefined, application:get_env(vm_sec, password)),
    {ok, #{actions := []}} = bc_gitops:plan(),

    ok = erpc:call(Node, application, set_env, [vm_sec, password, <<"by-hand">>]),
    {ok, #app_state{env = #{password := {age, changed}}}} = bc_gitops:get_app_status(vm_sec),
    {ok, #{actions := [{reconfigure, #app_spec{name = vm_sec}}]}} = bc_gitops:plan(),
    ok = bc_gitops:reconcile(),
    ?assertEqual({ok, <<"guest-canary-7">>}, erpc:call(Node, application, get_env, [vm_sec, password])),
    {ok, #{actions := []}} = bc_gitops:plan(),
    {ok, Status} = bc_gitops:status(),
    ?assertEqual(nomatch, string:find(io_lib:format("~p", [Status]), "guest-canary")).

%% The guest's OS process is killed: this node and its embedded app carry
%% on untouched; the app is reported failed (its guest's exit status
%% known), and the next reconcile heals it in a new guest. Killed again
%% right after, its repair waits for the backoff (400 ms of the test
%% clock), then comes.
killed_guest_is_healed_with_backoff(Config) ->
    Port = free_port(),
    Repo = vm_app(Config, "vm_crash", "1.0.0", counter_v1()),
    commit_spec(Config, "vm_crash", "1.0.0", Repo,
         ["isolation => vm, env => #{port => ", integer_to_list(Port), "}"]),
    HostRepo = host_app(Config, "vm_host"),
    commit_spec(Config, "vm_host", "1.0.0", HostRepo, "env => #{}"),
    attach_events(<<"vm">>, [[bc_gitops, drift, detected], [bc_gitops, vm, down]]),
    start(Config, #{clock => bc_gitops_test_clock, reconcile_interval => 3600000,
                    backoff_base => 400, backoff_max => 60000}),
    Reconciler = whereis(bc_gitops_reconciler),
    {ok, #app_state{pid = HostTop, node = undefined}} = bc_gitops:get_app_status(vm_host),
    {ok, #app_state{node = Node1}} = bc_gitops:get_app_status(vm_crash),

    kill_guest(vm_crash),
    ?assertMatch({down, Node1, {exit_status, 137}}, bc_gitops_vm:lookup(vm_crash)),
    ?assertMatch([{_, [bc_gitops, vm, down], #{app := vm_crash, node := Node1,
                                                reason := {exit_status, 137}}}], collect_events()),
    {ok, #app_state{status = failed, node = Node1}} = bc_gitops:get_app_status(vm_crash),
    ?assertEqual(Reconciler, whereis(bc_gitops_reconciler)),
    {ok, #app_state{status = running, pid = HostTop}} = bc_gitops:get_app_status(vm_host),

    ok = bc_gitops:reconcile(),
    {ok, #app_state{status = running, node = Node2}} = bc_gitops:get_app_status(vm_crash),
    ?assertNotEqual(Node1, Node2),
    ?assertEqual({200, <<"1.0.0">>}, http_get(Port)),
    ?assertMatch([{_, [bc_gitops, drift, detected], #{app := vm_crash, status := failed,
                                                      healed := true}}], collect_events()),

    %% Down again right after its repair: the next repair backs off.
    kill_guest(vm_crash),
    ?assertMatch({error, {out_of_sync, #{waiting := [{vm_crash, {backoff, 1, 400}}]}}},
                 bc_gitops:reconcile()),
    {ok, #app_state{status = failed}} = bc_gitops:get_app_status(vm_crash),
    {ok, #{repairs := #{vm_crash := #{count := 1, reason := failed, retry_in_ms := 400}}}} =
        bc_gitops:status(),
    ok = advance_and_wait(400),
    {ok, #app_state{status = running, node = Node3}} = bc_gitops:get_app_status(vm_crash),
    ?assertNotEqual(Node2, Node3),
    ?assertEqual({200, <<"1.0.0">>}, http_get(Port)),
    {ok, #app_state{status = running, pid = HostTop}} = bc_gitops:get_app_status(vm_host),
    ?assertEqual(Reconciler, whereis(bc_gitops_reconciler)).

%% memory_limit 256 MiB: a process whose heap grows past a quarter of it
%% is killed, and the guest lives on; binaries piled up past the limit end
%% the guest ("Cannot allocate", from its crash dump), reported as its
%% app's failure, while this node is untouched; the next reconcile starts
%% a new guest.
guest_over_memory_limit_dies(Config) ->
    Port = free_port(),
    Repo = vm_app(Config, "vm_mem", "1.0.0", counter_v1()),
    commit_spec(Config, "vm_mem", "1.0.0", Repo,
         ["isolation => vm, vm_config => #{memory_limit => 256},\n"
          "  env => #{port => ", integer_to_list(Port), "}"]),
    start(Config, #{reconcile_interval => 3600000}),
    {ok, #app_state{node = Node}} = bc_gitops:get_app_status(vm_mem),
    HostMemory = erlang:memory(total),

    %% One process: killed at its heap limit (64 MiB), the node stays.
    ?assertEqual(killed, erpc:call(Node, vm_mem_hog, heap, [200], 60000)),
    ?assertEqual(pong, net_adm:ping(Node)),
    {ok, #app_state{status = running}} = bc_gitops:get_app_status(vm_mem),

    %% The node as a whole: binaries in ETS, 8 MiB at a time.
    #{vm_mem := #{os_pid := OsPid}} = bc_gitops_vm:guests(),
    ok = erpc:cast(Node, vm_mem_hog, binaries, [8]),
    ok = wait_down(vm_mem, 600),
    {down, Node, {{exit_status, 1}, Slogan}} = bc_gitops_vm:lookup(vm_mem),
    ct:pal("guest over its memory limit: ~ts", [Slogan]),
    ?assertNotEqual(nomatch, string:find(Slogan, "Cannot allocate")),
    ok = wait_os_gone(OsPid, 100),
    {ok, #app_state{status = failed}} = bc_gitops:get_app_status(vm_mem),
    %% This node did not take the load.
    ?assert(erlang:memory(total) < HostMemory + 64 * 1024 * 1024),
    ?assertMatch({ok, #{guests := #{vm_mem := #{status := down}}}}, bc_gitops:status()),

    ok = bc_gitops:reconcile(),
    {ok, #app_state{status = running, node = Again}} = bc_gitops:get_app_status(vm_mem),
    ?assertNotEqual(Node, Again),
    ?assertEqual({200, <<"1.0.0">>}, http_get(Port)).

%% v1 -> v2 in the guest: the same guest node, the same counter process,
%% its state converted by v2's code_change/3; the hot path, done there.
hot_upgrade_in_guest_keeps_process_and_state(Config) ->
    Port = free_port(),
    Repo = vm_app(Config, "vm_hot", "1.0.0", counter_v1()),
    Extra = ["isolation => vm, env => #{port => ", integer_to_list(Port), "}"],
    commit_spec(Config, "vm_hot", "1.0.0", Repo, Extra),
    start(Config, #{reconcile_interval => 3600000}),
    {ok, #app_state{node = Node, pid = Top}} = bc_gitops:get_app_status(vm_hot),
    Counter = erpc:call(Node, erlang, whereis, [vm_hot_counter]),
    [1, 2, 3] = [erpc:call(Node, gen_server, call, [vm_hot_counter, bump]) || _ <- [1, 2, 3]],
    attach_events(<<"vm">>, [[bc_gitops, upgrade, stop]]),

    vm_app_files(Repo, "vm_hot", "2.0.0", counter_v2()),
    _ = commit(Repo, "v2"),
    commit_spec(Config, "vm_hot", "2.0.0", Repo, Extra),
    ok = bc_gitops:reconcile(),
    [{_, _, #{path := hot, result := ok, modules := Modules}}] = collect_events(),
    ?assert(lists:member(vm_hot_counter, Modules)),
    {ok, #app_state{version = <<"2.0.0">>, node = Node, pid = Top}} =
        bc_gitops:get_app_status(vm_hot),
    ?assertEqual(Counter, erpc:call(Node, erlang, whereis, [vm_hot_counter])),
    ?assertEqual({count, 3, upgraded}, erpc:call(Node, gen_server, call, [vm_hot_counter, get])),
    ?assertEqual(4, erpc:call(Node, gen_server, call, [vm_hot_counter, bump])),
    ?assertMatch({vm_hot, _, "2.0.0"},
                 lists:keyfind(vm_hot, 1, erpc:call(Node, application, which_applications, []))),
    ?assertEqual({200, <<"2.0.0">>}, http_get(Port)).

%% The same version, moved: into a guest, to a guest with other limits,
%% and back into this node; each move stops it where it was.
isolation_change_moves_the_app(Config) ->
    Port = free_port(),
    Repo = vm_app(Config, "vm_move", "1.0.0", counter_v1()),
    Env = ["env => #{port => ", integer_to_list(Port), "}"],
    commit_spec(Config, "vm_move", "1.0.0", Repo, Env),
    attach_events(<<"vm">>, [[bc_gitops, upgrade, stop]]),
    start(Config, #{reconcile_interval => 3600000}),
    {ok, #app_state{node = undefined, isolation = embedded}} = bc_gitops:get_app_status(vm_move),
    ?assert(lists:keymember(vm_move, 1, application:which_applications())),

    commit_spec(Config, "vm_move", "1.0.0", Repo, ["isolation => vm, ", Env]),
    ok = bc_gitops:reconcile(),
    {ok, #app_state{node = Node1, isolation = vm}} = bc_gitops:get_app_status(vm_move),
    ?assert(is_atom(Node1) andalso Node1 =/= undefined),
    ?assertNot(lists:keymember(vm_move, 1, application:which_applications())),
    ?assertEqual({200, <<"1.0.0">>}, http_get(Port)),

    commit_spec(Config, "vm_move", "1.0.0", Repo,
         ["isolation => vm, vm_config => #{scheduler_limit => 1}, ", Env]),
    ok = bc_gitops:reconcile(),
    {ok, #app_state{node = Node2, vm_config = #{scheduler_limit := 1}}} =
        bc_gitops:get_app_status(vm_move),
    ?assertNotEqual(Node1, Node2),
    ?assertEqual(1, erpc:call(Node2, erlang, system_info, [schedulers_online])),
    ?assertEqual(pang, net_adm:ping(Node1)),

    commit_spec(Config, "vm_move", "1.0.0", Repo, Env),
    ok = bc_gitops:reconcile(),
    {ok, #app_state{node = undefined, isolation = embedded}} = bc_gitops:get_app_status(vm_move),
    ?assert(lists:keymember(vm_move, 1, application:which_applications())),
    ?assertEqual(pang, net_adm:ping(Node2)),
    ?assertEqual({200, <<"1.0.0">>}, http_get(Port)),
    ?assertMatch([{_, _, #{from_version := <<"1.0.0">>, to_version := <<"1.0.0">>,
                           path := restart, not_hot := moved, result := ok}},
                  _, _], collect_events()).

%% Stopping bc_gitops stops its guests: disconnected when it returns,
%% their OS processes gone within 5 s.
guests_stop_with_bc_gitops(Config) ->
    Repo = vm_app(Config, "vm_stop", "1.0.0", counter_v1()),
    commit_spec(Config, "vm_stop", "1.0.0", Repo,
         ["isolation => vm, env => #{port => ", integer_to_list(free_port()), "}"]),
    start(Config, #{reconcile_interval => 3600000}),
    {ok, #app_state{node = Node}} = bc_gitops:get_app_status(vm_stop),
    #{vm_stop := #{os_pid := OsPid}} = bc_gitops_vm:guests(),
    ok = application:stop(bc_gitops),
    %% Its node is gone when stop returns; its OS process a moment later.
    ?assertNot(lists:member(Node, nodes(connected))),
    ok = wait_os_gone(OsPid, 50),
    ?assertEqual(pang, net_adm:ping(Node)).

%% A host killed outright (SIGKILL: nothing of it runs any more) takes
%% its guest with it: the guest halts when its control connection closes.
guest_dies_with_a_killed_host(Config) ->
    Repo = vm_app(Config, "vm_orphan", "1.0.0", counter_v1()),
    Paths = [P || P <- code:get_path(), string:find(P, "_build") =/= nomatch],
    {ok, Host, HostNode} =
        peer:start(#{name => "bc_gitops_vm_host_" ++ os:getpid(), host => "127.0.0.1",
                     longnames => true, connection => standard_io,
                     args => lists:append([["-pa", P] || P <- Paths]), wait_boot => 30000}),
    try
        Call = fun(M, F, A) -> peer:call(Host, M, F, A, 300000) end,
        ok = Call(application, load, [bc_gitops]),
        ok = Call(application, set_env, [bc_gitops, local_path,
                                         filename:join(?config(dir, Config), "host")]),
        {ok, _} = Call(application, ensure_all_started, [bc_gitops]),
        Spec = #app_spec{name = vm_orphan, version = <<"1.0.0">>,
                         source = #source_spec{type = git, url = list_to_binary(Repo),
                                               ref = <<"main">>},
                         env = #{port => free_port()}, isolation = vm},
        {ok, #app_state{node = Guest}} = Call(bc_gitops_runtime_default, deploy, [Spec]),
        ?assertMatch("vm_orphan-" ++ _, atom_to_list(Guest)),
        ?assertMatch([_, "127.0.0.1"], string:split(atom_to_list(Guest), "@")),
        #{vm_orphan := #{os_pid := OsPid}} = Call(bc_gitops_vm, guests, []),
        ?assert(os_alive(OsPid)),
        HostOsPid = Call(os, getpid, []),
        ct:pal("host ~p (os pid ~s), guest ~p (os pid ~s)", [HostNode, HostOsPid, Guest, OsPid]),
        ok = kill(HostOsPid),
        ok = wait_os_gone(OsPid, 100)
    after
        catch peer:stop(Host)
    end.

%%% Helpers

%% Kills the guest of App with SIGKILL and waits until bc_gitops saw it go.
kill_guest(App) ->
    #{App := #{os_pid := OsPid, status := up}} = bc_gitops_vm:guests(),
    ok = kill(OsPid),
    ok = wait_down(App, 200).

kill(OsPid) ->
    Port = open_port({spawn_executable, os:find_executable("kill")},
                     [{args, ["-9", OsPid]}, exit_status]),
    receive {Port, {exit_status, 0}} -> ok after 10000 -> ct:fail({kill, OsPid}) end.

wait_down(App, 0) ->
    ct:fail({guest_not_down, App, bc_gitops_vm:guests()});
wait_down(App, N) ->
    case bc_gitops_vm:lookup(App) of
        {down, _, Why} when Why =/= undefined -> ok;
        _ -> timer:sleep(100), wait_down(App, N - 1)
    end.

%% The soft and hard RLIMIT_DATA of an OS process.
data_limit(OsPid) ->
    {ok, Limits} = file:read_file("/proc/" ++ OsPid ++ "/limits"),
    [Line] = [L || L <- string:split(Limits, "\n", all), string:prefix(L, "Max data size") =/= nomatch],
    [Soft, Hard | _] = string:lexemes(string:prefix(Line, "Max data size"), " "),
    {binary_to_integer(Soft), binary_to_integer(Hard)}.

%% Whether an OS process runs (a zombie does not).
os_alive(OsPid) ->
    case file:read_file("/proc/" ++ OsPid ++ "/stat") of
        {ok, Stat} ->
            [_, AfterName] = string:split(Stat, ") ", trailing),
            not lists:member(binary:first(AfterName), [$Z, $X]);
        {error, _} ->
            false
    end.

wait_os_gone(OsPid, 0) ->
    ct:fail({still_running, OsPid});
wait_os_gone(OsPid, N) ->
    case os_alive(OsPid) of
        true -> timer:sleep(100), wait_os_gone(OsPid, N - 1);
        false -> ok
    end.

%% An app for guests, committed: a web server on its env port answering
%% its version, a counter (`Counter' gives the source of its state
%% handling), a custom health check and memory hogs.
vm_app(Config, App, Vsn, Counter) ->
    Repo = make_repo(Config, App),
    vm_app_files(Repo, App, Vsn, Counter),
    _ = commit(Repo, Vsn),
    Repo.

vm_app_files(Repo, App, Vsn, Counter) ->
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    M = fun(Suffix) -> App ++ "_" ++ Suffix end,
    W(App ++ ".app.src",
      ["{application, ", App, ", [{vsn, \"", Vsn, "\"}, {mod, {", M("app"), ", []}},\n"
       " {modules, [", lists:join(", ", [M(S) || S <- ["app", "srv", "counter", "health",
                                                       "hog"]]), "]},\n"
       " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W(M("app") ++ ".erl",
      ["-module(", M("app"), ").\n-behaviour(application).\n-behaviour(supervisor).\n"
       "-export([start/2, stop/1, init/1]).\n"
       "start(_, _) -> supervisor:start_link(?MODULE, []).\nstop(_) -> ok.\n"
       "init([]) -> {ok, {#{}, [#{id => srv, start => {", M("srv"), ", start_link, []}},\n"
       "                        #{id => counter, start => {", M("counter"), ", start_link, []}}]}}.\n"]),
    W(M("srv") ++ ".erl", bc_gitops_test_util:web_server_src(
                            M("srv"), ["element(2, application:get_env(", App, ", port))"],
                            Vsn, "200 OK")),
    W(M("counter") ++ ".erl",
      ["-module(", M("counter"), ").\n-behaviour(gen_server).\n"
       "-export([start_link/0, init/1, handle_call/3, handle_cast/2, code_change/3]).\n"
       "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n",
       element(1, Counter),
       "handle_call(get, _, S) -> {reply, S, S};\n", element(2, Counter),
       "handle_cast(_, S) -> {noreply, S}.\n", element(3, Counter)]),
    W(M("health") ++ ".erl",
      ["-module(", M("health"), ").\n-export([check/1]).\n"
       "check(", App, ") -> case whereis(", M("srv"), ") of\n"
       "    P when is_pid(P) -> ok;\n    _ -> {error, no_server}\nend.\n"]),
    W(M("hog") ++ ".erl",
      ["-module(", M("hog"), ").\n-export([heap/1, binaries/1]).\n"
       "%% A process whose heap grows to MiB: how it ended.\n"
       "heap(MiB) ->\n"
       "    {_, Ref} = spawn_monitor(fun() -> exit({grew, length(grow([], MiB * 131072 div 2))}) end),\n"
       "    receive {'DOWN', Ref, _, _, Why} -> Why end.\n"
       "grow(Acc, 0) -> Acc;\ngrow(Acc, N) -> grow([N | Acc], N - 1).\n"
       "%% Binaries of MiB each kept in ETS, without end.\n"
       "binaries(MiB) ->\n"
       "    T = ets:new(hog, [public]),\n"
       "    [ets:insert(T, {I, binary:copy(<<I:8>>, MiB * 1048576)}) || I <- lists:seq(1, 100000)].\n"]).

%% A counter whose state is {count, N}.
counter_v1() ->
    {"init([]) -> {ok, {count, 0}}.\n",
     "handle_call(bump, _, {count, N}) -> {reply, N + 1, {count, N + 1}}.\n",
     "code_change(_, S, _) -> {ok, S}.\n"}.

%% The same counter, its state now {count, N, upgraded}: code_change/3
%% converts the old one.
counter_v2() ->
    {"init([]) -> {ok, {count, 0, upgraded}}.\n",
     "handle_call(bump, _, {count, N, U}) -> {reply, N + 1, {count, N + 1, U}}.\n",
     "code_change({down, _}, {count, N, _}, _) -> {ok, {count, N}};\n"
     "code_change(_, {count, N}, _) -> {ok, {count, N, upgraded}}.\n"}.

%% A plain app that runs in this node.
host_app(Config, App) ->
    Repo = make_repo(Config, App),
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    W(App ++ ".app.src", ["{application, ", App, ", [{vsn, \"1.0.0\"}, {mod, {", App, "_app, []}},\n"
                          " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W(App ++ "_app.erl", ["-module(", App, "_app).\n-behaviour(application).\n"
                          "-behaviour(supervisor).\n-export([start/2, stop/1, init/1]).\n"
                          "start(_, _) -> supervisor:start_link(?MODULE, []).\nstop(_) -> ok.\n"
                          "init([]) -> {ok, {#{}, []}}.\n"]),
    _ = commit(Repo, "v1"),
    Repo.
