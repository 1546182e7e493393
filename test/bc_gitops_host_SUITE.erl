%%% bc_gitops as its users meet it: a dependency of a relx release, of a
%%% mix project, and in `rebar3 shell'. Each case builds a real host
%%% project with the real tools, runs it as an OS process of its own, and
%%% has it reconcile a local gitops repository whose one spec deploys a
%%% small rebar3 app (hs_hello) from git. Programs are started as ports,
%%% never through a shell; any that still runs when a case ends (a
%%% failure, a timetrap) is killed in end_per_testcase.
-module(bc_gitops_host_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("kernel/include/file.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([relx_release/1, mix_project/1, rebar3_shell/1]).

-import(bc_gitops_test_util, [write_file/2, commit/2]).

%% A first run may build the NIF (cargo) inside the first case.
suite() -> [{timetrap, {minutes, 15}}].

all() -> [relx_release, mix_project, rebar3_shell].

init_per_suite(Config) ->
    _ = [exe(Tool) || Tool <- ["rebar3", "mix", "cargo", "git"]],
    Root = project_root(),
    Dir = bc_gitops_test_util:tmp_dir("ct_host"),
    AppRepo = filename:join(Dir, "hs_hello"),
    ok = bc_gitops_test_util:init_repo(AppRepo),
    _ = [begin
             write_hello(AppRepo, Vsn),
             _ = commit(AppRepo, "hs_hello " ++ Vsn),
             bc_gitops_test_util:git(AppRepo, ["tag", "v" ++ Vsn])
         end || Vsn <- ["1.0.0", "1.1.0"]],
    [{root, Root}, {dir, Dir}, {app_repo, AppRepo} | Config].

end_per_suite(Config) ->
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%% Each case gets a gitops repository asking for hs_hello 1.0.0 with a
%% greeting of its own, and a directory for bc_gitops's state.
init_per_testcase(Case, Config) ->
    CaseDir = filename:join(?config(dir, Config), atom_to_list(Case)),
    Gitops = filename:join(CaseDir, "gitops"),
    ok = bc_gitops_test_util:init_repo(Gitops),
    write_file(filename:join([Gitops, "apps", ".keep"]), ""),
    Config1 = [{case_dir, CaseDir}, {gitops, Gitops}, {state, filename:join(CaseDir, "state")}
               | Config],
    ask_for_hello(Config1, "1.0.0", greeting(Case)),
    Config1.

end_per_testcase(_Case, Config) ->
    _ = [kill(Pid) || Pid <- tracked(Config)],
    ok.

%% A commit to the gitops repository: hs_hello at Vsn.
ask_for_hello(Config, Vsn, Greeting) ->
    Gitops = ?config(gitops, Config),
    write_file(filename:join([Gitops, "apps", "hs_hello", "app.config"]),
               io_lib:format("#{name => hs_hello,~n"
                             "  version => <<\"~s\">>,~n"
                             "  source => #{type => git, url => ~p, ref => <<\"v~s\">>},~n"
                             "  env => #{greeting => ~p}}.~n",
                             [Vsn, unicode:characters_to_binary(?config(app_repo, Config)), Vsn,
                              Greeting])),
    _ = commit(Gitops, "hs_hello " ++ Vsn),
    ok.

greeting(relx_release) -> <<"hello from the release">>;
greeting(mix_project) -> <<"hello from mix">>;
greeting(rebar3_shell) -> <<"hello from the shell">>.

%%--------------------------------------------------------------------
%% relx

%% A host app whose release includes bc_gitops (a `_checkouts' link to
%% this project), configured in sys.config: the release boots, loads the
%% NIF from its own lib/bc_gitops-*/priv, reconciles the gitops repository
%% on its own, and stops cleanly.
relx_release(Config) ->
    Host = filename:join(?config(case_dir, Config), "host"),
    Node = "bcg_rel_" ++ os:getpid() ++ "_" ++ integer_to_list(erlang:unique_integer([positive])),
    Cookie = binary_to_list(binary:encode_hex(crypto:strong_rand_bytes(16))),
    write_file(filename:join(Host, "rebar.config"),
               "{erl_opts, [debug_info]}.\n"
               "{deps, [bc_gitops]}.\n"
               "{relx, [{release, {host, \"0.1.0\"}, [host]},\n"
               "        {sys_config, \"config/sys.config\"},\n"
               "        {vm_args, \"config/vm.args\"},\n"
               "        {dev_mode, false},\n"
               "        {include_erts, false},\n"
               "        {src_tests, false}]}.\n"),
    write_file(filename:join([Host, "src", "host.app.src"]),
               "{application, host,\n"
               " [{description, \"A release that runs bc_gitops\"}, {vsn, \"0.1.0\"},\n"
               "  {applications, [kernel, stdlib, bc_gitops]}, {env, []}]}.\n"),
    SysConfig = [{bc_gitops, [{repo_url, ?config(gitops, Config)},
                              {local_path, ?config(state, Config)},
                              {reconcile_interval, 3600000}]}],
    write_file(filename:join([Host, "config", "sys.config"]), io_lib:format("~tp.~n", [SysConfig])),
    write_file(filename:join([Host, "config", "vm.args"]),
               ["-sname ", Node, "\n-setcookie ", Cookie, "\n"]),
    Link = filename:join([Host, "_checkouts", "bc_gitops"]),
    ok = filelib:ensure_dir(Link),
    ok = file:make_symlink(?config(root, Config), Link),

    must(run(Config, exe("rebar3"), ["release"], [{cd, Host}], 600000)),
    Rel = filename:join([Host, "_build", "default", "rel", "host"]),
    Bin = filename:join([Rel, "bin", "host"]),
    {Port, OsPid} = start(Config, Bin, ["foreground"], [{cd, Rel}]),
    Eval = fun(Expr) -> rel_eval(Config, Bin, Expr) end,
    wait_for(fun() -> element(1, run(Config, Bin, ["ping"], [], 30000)) =:= 0 end,
             60000, fun() -> {release_not_up, drain(Port)} end),
    ?assertEqual(integer_to_list(OsPid), string:trim(must(run(Config, Bin, ["pid"], [], 30000)))),

    ?assertEqual(embedded, Eval("code:get_mode()")),
    %% sys.config alone makes it reconcile: no call from us.
    StatusMap = fun() -> Eval("{ok, S} = bc_gitops:status(), S") end,
    wait_for(fun() -> maps:get(last_reconcile, StatusMap()) =/= undefined end,
             300000, fun() -> {never_reconciled, StatusMap()} end),
    ?assertMatch(#{status := synced, app_count := 1}, StatusMap()),
    ?assertEqual(<<"hello from the release (1.0.0)">>, Eval("hs_hello_server:greet()")),
    ?assertMatch({hs_hello, _, "1.0.0"},
                 Eval("lists:keyfind(hs_hello, 1, application:which_applications())")),
    ?assertEqual(ok, Eval("bc_gitops:reconcile()")),

    %% An upgrade is hot in a release too: the module 1.1.0 adds is loaded
    %% (nothing loads on demand in embedded mode), the server stays.
    Server = Eval("pid_to_list(whereis(hs_hello_server))"),
    ask_for_hello(Config, "1.1.0", greeting(relx_release)),
    ?assertEqual(ok, Eval("bc_gitops:reconcile()")),
    ?assertEqual(<<"HELLO FROM THE RELEASE (1.1.0)">>, Eval("hs_hello_server:greet()")),
    ?assertEqual(Server, Eval("pid_to_list(whereis(hs_hello_server))")),

    %% The NIF is the release's own copy, mapped from there.
    Priv = filename:join([Rel, "lib", "bc_gitops-" ++ app_key(vsn), "priv"]),
    ?assertEqual(Priv, Eval("code:priv_dir(bc_gitops)")),
    ?assertEqual(ok, Eval("bc_gitops_nif:load_error()")),
    Lib = filename:join(Priv, "bc_gitops_nif.so"),
    ?assertMatch({ok, #file_info{type = regular}}, file:read_link_info(Lib)),
    ?assertEqual([Lib], lists:usort(Eval("{ok, Maps} = file:read_file(\"/proc/self/maps\"),\n"
                                         "[binary_to_list(lists:last(binary:split(L, <<\" \">>, [global, trim_all])))\n"
                                         " || L <- binary:split(Maps, <<\"\\n\">>, [global]),\n"
                                         "    binary:match(L, <<\"bc_gitops_nif\">>) =/= nomatch]"))),

    %% The release carries the bc_gitops command in bc_gitops's priv: it
    %% reaches the node by its name and cookie, as bin/host does.
    Cli = filename:join([Rel, "lib", "bc_gitops-" ++ app_key(vsn), "priv", "bc_gitops"]),
    NodeName = atom_to_list(Eval("node()")),
    CliStatus = must(run(Config, Cli, ["--node", NodeName, "--cookie", Cookie, "status"], [], 60000)),
    ?assertMatch({match, _}, re:run(CliStatus, "^hs_hello +1\\.1\\.0 +1\\.1\\.0 +running +healthy",
                                    [multiline])),
    CliHistory = must(run(Config, Cli, ["--node", NodeName, "--cookie", Cookie, "history"], [],
                          60000)),
    ?assertMatch({match, _}, re:run(CliHistory, "hs_hello +upgrade +1\\.0\\.0 +1\\.1\\.0 +ok +hot",
                                    [multiline])),

    %% `bin/host stop' ends the node: the foreground process exits with 0.
    must(run(Config, Bin, ["stop"], [], 60000)),
    receive
        {Port, {exit_status, Exit}} ->
            untrack(Config, OsPid),
            ct:log("release output:~n~ts", [drain(Port)]),
            ?assertEqual(0, Exit)
    after 60000 ->
        ct:fail({release_still_running, drain(Port)})
    end,
    ?assertNotEqual(0, element(1, run(Config, Bin, ["ping"], [], 30000))).

%% Evaluates Expr in the running release through `bin/host eval'. The
%% result comes back as the hex of its external term format, which
%% survives erl_call's printing exactly.
rel_eval(Config, Bin, Expr) ->
    Wrapped = "binary_to_list(binary:encode_hex(term_to_binary(begin " ++ Expr ++ " end))).",
    Out = must(run(Config, Bin, ["eval", Wrapped], [], 60000)),
    case re:run(Out, "\"([0-9A-F]+)\"", [{capture, all_but_first, binary}]) of
        {match, [Hex]} -> binary_to_term(binary:decode_hex(Hex));
        nomatch -> ct:fail({eval_failed, Expr, Out})
    end.

%%--------------------------------------------------------------------
%% mix

%% A mix project next to a bc_gitops checkout, depending on it by path,
%% configured in config/config.exs. mix builds bc_gitops through its
%% mix.exs (no rebar3, no hex), and `mix run' reconciles.
mix_project(Config) ->
    CaseDir = ?config(case_dir, Config),
    ok = file:make_symlink(?config(root, Config), filename:join(CaseDir, "bc_gitops")),
    Mix = filename:join(CaseDir, "host_mix"),
    write_file(filename:join(Mix, "mix.exs"),
               "defmodule HostMix.MixProject do\n"
               "  use Mix.Project\n\n"
               "  def project do\n"
               "    [app: :host_mix, version: \"0.1.0\", deps: [{:bc_gitops, path: \"../bc_gitops\"}]]\n"
               "  end\n\n"
               "  def application, do: [extra_applications: [:logger]]\n"
               "end\n"),
    write_file(filename:join([Mix, "config", "config.exs"]),
               "import Config\n\n"
               "config :bc_gitops,\n"
               "  repo_url: Path.expand(\"../../gitops\", __DIR__),\n"
               "  local_path: Path.expand(\"../../state\", __DIR__),\n"
               "  reconcile_interval: :timer.hours(1)\n"),
    Expr = "result = :bc_gitops.reconcile()\n"
           "{:ok, status} = :bc_gitops.status()\n"
           "report = {result, status.status, :hs_hello_server.greet(),\n"
           "          Application.spec(:hs_hello, :vsn), :code.priv_dir(:bc_gitops),\n"
           "          :bc_gitops_nif.load_error(), Application.spec(:bc_gitops, :applications),\n"
           "          Application.spec(:bc_gitops, :vsn)}\n"
           "IO.inspect(report)\n"
           "IO.puts(\"REPORT \" <> Base.encode16(:erlang.term_to_binary(report)))\n",
    Out = must(run(Config, exe("mix"), ["run", "-e", Expr], [{cd, Mix}], 600000)),
    {match, [Hex]} = re:run(Out, "REPORT ([0-9A-F]+)", [{capture, all_but_first, binary}]),
    Priv = filename:join([Mix, "_build", "dev", "lib", "bc_gitops", "priv"]),
    %% The .app mix made from mix.exs says what bc_gitops.app.src says.
    ?assertEqual({ok, synced, <<"hello from mix (1.0.0)">>, "1.0.0", Priv, ok,
                  app_key(applications), app_key(vsn)},
                 binary_to_term(binary:decode_hex(Hex))).

%%--------------------------------------------------------------------
%% rebar3 shell

%% The session the README shows: in this project, `rebar3 shell' with
%% config/shell.config.src (the repository and the state directory from
%% the environment) boots bc_gitops, and typed calls reconcile.
rebar3_shell(Config) ->
    Env = [{"BC_GITOPS_REPO", ?config(gitops, Config)}, {"BC_GITOPS_DIR", ?config(state, Config)}],
    {Port, OsPid} = start(Config, exe("rebar3"), ["shell", "--config", "config/shell.config.src"],
                          [{cd, ?config(root, Config)}, {env, Env}]),
    Deadline = erlang:monotonic_time(millisecond) + 600000,
    {_, Rest0} = expect(Port, [<<"Booted bc_gitops">>, <<"Failed to boot">>], <<>>, Deadline),
    ?assertEqual(nomatch, binary:match(Rest0, <<"Failed to boot">>), Rest0),
    type(Port, "bc_gitops:reconcile().\n"),
    {R1, Rest1} = expect(Port, <<"2> ">>, Rest0, Deadline),
    ?assertMatch({match, _}, re:run(R1, "(^|> )ok\\R", [multiline]), R1),
    type(Port, "hs_hello_server:greet().\n"),
    {R2, _} = expect(Port, <<"3> ">>, Rest1, Deadline),
    ?assertNotEqual(nomatch, binary:match(R2, <<"<<\"hello from the shell (1.0.0)\">>">>), R2),
    type(Port, "q().\n"),
    receive
        {Port, {exit_status, Exit}} ->
            untrack(Config, OsPid),
            ?assertEqual(0, Exit)
    after 60000 ->
        ct:fail({shell_still_running, drain(Port)})
    end.

type(Port, Line) ->
    true = port_command(Port, Line),
    ok.

%% Reads the port until Pattern (one, or the first of a list) appears;
%% what came before it, and what came from it on.
expect(Port, Pattern, Buf, Deadline) ->
    case binary:match(Buf, Pattern) of
        {Pos, Len} ->
            ct:log("~ts", [binary:part(Buf, 0, Pos + Len)]),
            {binary:part(Buf, 0, Pos), binary:part(Buf, Pos, byte_size(Buf) - Pos)};
        nomatch ->
            Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
            receive
                {Port, {data, D}} -> expect(Port, Pattern, <<Buf/binary, D/binary>>, Deadline);
                {Port, {exit_status, S}} -> ct:fail({exited, S, waiting_for, Pattern, Buf})
            after Left ->
                ct:fail({timeout, waiting_for, Pattern, Buf})
            end
    end.

%%--------------------------------------------------------------------
%% Programs, without a shell

%% Starts Exe; end_per_testcase kills it unless it is seen to exit.
start(Config, Exe, Args, Opts) ->
    {Env, Opts1} = case lists:keytake(env, 1, Opts) of
                       {value, {env, E}, O} -> {E, O};
                       false -> {[], Opts}
                   end,
    Port = open_port({spawn_executable, Exe},
                     [{args, Args}, {env, env(Env)}, exit_status, stderr_to_stdout, binary
                      | Opts1]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    track(Config, OsPid),
    {Port, OsPid}.

%% Runs Exe to its end: {ExitStatus, Output}. Killed after Timeout.
run(Config, Exe, Args, Opts, Timeout) ->
    {Port, OsPid} = start(Config, Exe, Args, Opts),
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    collect(Config, Port, OsPid, {Exe, Args}, Deadline, []).

collect(Config, Port, OsPid, What, Deadline, Acc) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, D}} ->
            collect(Config, Port, OsPid, What, Deadline, [Acc, D]);
        {Port, {exit_status, S}} ->
            untrack(Config, OsPid),
            {S, unicode:characters_to_list(iolist_to_binary(Acc))}
    after Left ->
        kill(OsPid),
        ct:fail({timeout, What, iolist_to_binary(Acc)})
    end.

%% The output of a run that had to succeed.
must({0, Out}) -> ct:log("~ts", [Out]), Out;
must({Status, Out}) -> ct:fail({exit_status, Status, Out}).

drain(Port) ->
    receive {Port, {data, D}} -> [D | drain(Port)] after 0 -> [] end.

%% The same environment for every program: offline, the dev profiles.
env(Extra) ->
    [{"REBAR_OFFLINE", "1"}, {"MIX_ENV", false}, {"ERL_LIBS", false} | Extra].

exe(Name) ->
    case os:find_executable(Name) of
        false -> ct:fail({not_found, Name, "scripts/setup.sh installs it"});
        Path -> Path
    end.

%% Polls Fun until it is true; at Timeout, fails with what Why() says.
wait_for(Fun, Timeout, Why) ->
    wait_until(Fun, erlang:monotonic_time(millisecond) + Timeout, Why).

wait_until(Fun, Deadline, Why) ->
    case Fun() of
        true ->
            ok;
        false ->
            erlang:monotonic_time(millisecond) < Deadline orelse ct:fail({gave_up, Why()}),
            timer:sleep(250),
            wait_until(Fun, Deadline, Why)
    end.

%% OS processes started by a case, in a file of the case's directory, so
%% that end_per_testcase finds them whatever process it runs in.
pid_file(Config) -> filename:join(?config(case_dir, Config), "os_pids").

tracked(Config) ->
    case file:consult(pid_file(Config)) of
        {ok, Pids} -> Pids;
        {error, _} -> []
    end.

track(Config, Pid) -> write_pids(Config, [Pid | tracked(Config)]).

untrack(Config, Pid) -> write_pids(Config, tracked(Config) -- [Pid]).

write_pids(Config, Pids) ->
    write_file(pid_file(Config), [io_lib:format("~p.~n", [P]) || P <- Pids]).

kill(OsPid) ->
    Port = open_port({spawn_executable, exe("kill")},
                     [{args, ["-KILL", integer_to_list(OsPid)]}, exit_status, stderr_to_stdout]),
    receive {Port, {exit_status, _}} -> ok after 10000 -> ok end.

%% bc_gitops's .app key, as this node has it.
app_key(Key) ->
    _ = application:load(bc_gitops),
    {ok, Value} = application:get_key(bc_gitops, Key),
    Value.

%% This project's directory: the test profile's lib dir is
%% <root>/_build/test/lib/bc_gitops.
project_root() ->
    Root = normalize(filename:join(code:lib_dir(bc_gitops), "../../../..")),
    true = filelib:is_regular(filename:join([Root, "scripts", "build_nif.sh"])),
    true = filelib:is_regular(filename:join(Root, "mix.exs")),
    Root.

normalize(Path) ->
    filename:join(lists:reverse(lists:foldl(fun("..", [_ | Acc]) -> Acc;
                                               (".", Acc) -> Acc;
                                               (P, Acc) -> [P | Acc]
                                            end, [], filename:split(Path)))).

%%--------------------------------------------------------------------
%% The app the gitops repositories deploy: an application, a supervisor
%% and a server that greets with the `greeting' env from the spec. 1.1.0
%% says it through a module 1.0.0 did not have.
write_hello(Repo, Vsn) ->
    W = fun(Rel, Text) -> write_file(filename:join(Repo, Rel), Text) end,
    W("rebar.config", "{erl_opts, [debug_info]}.\n"),
    W("src/hs_hello.app.src",
      ["{application, hs_hello, [{description, \"hello\"}, {vsn, \"", Vsn, "\"},\n"
       "  {mod, {hs_hello_app, []}}, {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W("src/hs_hello_app.erl",
      "-module(hs_hello_app).\n-behaviour(application).\n-export([start/2, stop/1]).\n"
      "start(_, _) -> hs_hello_sup:start_link().\nstop(_) -> ok.\n"),
    W("src/hs_hello_sup.erl",
      "-module(hs_hello_sup).\n-behaviour(supervisor).\n-export([start_link/0, init/1]).\n"
      "start_link() -> supervisor:start_link({local, ?MODULE}, ?MODULE, []).\n"
      "init([]) -> {ok, {#{}, [#{id => s, start => {hs_hello_server, start_link, []}}]}}.\n"),
    Say = case Vsn of
              "1.0.0" -> "G";
              _ -> W("src/hs_hello_words.erl",
                     "-module(hs_hello_words).\n-export([shout/1]).\n"
                     "shout(G) -> string:uppercase(G).\n"),
                   "hs_hello_words:shout(G)"
          end,
    W("src/hs_hello_server.erl",
      ["-module(hs_hello_server).\n-behaviour(gen_server).\n"
       "-export([start_link/0, greet/0, init/1, handle_call/3, handle_cast/2, code_change/3]).\n"
       "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n"
       "greet() -> gen_server:call(?MODULE, greet).\n"
       "init([]) -> {ok, none}.\n"
       "handle_call(greet, _, S) ->\n"
       "    {ok, G} = application:get_env(hs_hello, greeting),\n"
       "    {ok, V} = application:get_key(hs_hello, vsn),\n"
       "    {reply, iolist_to_binary([", Say, ", \" (\", V, \")\"]), S}.\n"
       "handle_cast(_, S) -> {noreply, S}.\n"
       "code_change(_, S, _) -> {ok, S}.\n"]).
