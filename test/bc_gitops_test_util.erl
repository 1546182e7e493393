%%% Helpers shared by the EUnit and Common Test suites: temporary
%%% directories and spec files.
-module(bc_gitops_test_util).

-export([tmp_dir/1, write_file/2, write_spec/3, rm_rf/1, minimal_spec/1]).
-export([git/2, git/3, run/4, commit/2, init_repo/1]).
-export([wait_reconciled/1, advance_and_wait/1, web_server_src/4]).
-export([install_cli/1, run_cli/4]).

%% A fresh directory under the system temp dir ($TMPDIR, else /tmp).
tmp_dir(Prefix) ->
    Base = filename:join(case os:getenv("TMPDIR") of
                             false -> "/tmp";
                             "" -> "/tmp";
                             T -> T
                         end, "bc_gitops_tests"),
    Dir = filename:join(Base, Prefix ++ "_" ++ integer_to_list(erlang:unique_integer([positive]))
                                    ++ "_" ++ os:getpid()),
    ok = filelib:ensure_path(Dir),
    Dir.

%% A binary is written as it is; other chardata as UTF-8, as spec files are.
write_file(Path, Content) when is_binary(Content) ->
    ok = filelib:ensure_dir(Path),
    ok = file:write_file(Path, Content);
write_file(Path, Content) ->
    write_file(Path, unicode:characters_to_binary(Content)).

%% Writes Root/apps/App/FileName.
write_spec(Root, {App, FileName}, Content) ->
    write_file(filename:join([Root, "apps", App, FileName]), Content);
write_spec(Root, App, Content) ->
    write_spec(Root, {App, "app.config"}, Content).

%% The smallest valid term spec for App (a string), as text.
minimal_spec(App) ->
    ["#{name => ", App, ", version => <<\"1.0.0\">>, source => #{type => hex}}.\n"].

rm_rf(Dir) ->
    _ = file:del_dir_r(Dir),
    ok.

%% A new git repository with a `main' branch.
init_repo(Dir) ->
    ok = filelib:ensure_path(Dir),
    _ = git(Dir, ["init", "-q", "-b", "main"]),
    ok.

%% Commits everything in Repo; returns the new commit's SHA.
commit(Repo, Message) ->
    _ = git(Repo, ["add", "-A"]),
    _ = git(Repo, ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", Message]),
    string:trim(git(Repo, ["rev-parse", "HEAD"])).

%% Runs git without a shell; its output, or an error with that output.
%% The machine's and the user's git config are ignored (hooks, signing,
%% templates), so the tests run the same everywhere.
git(Dir, Args) ->
    git(Dir, Args, []).

%% git/2 with more environment variables (GNUPGHOME for signing).
git(Dir, Args, Env) ->
    run("git", Args, Dir, [{"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"} | Env]).

%% Runs the program `Name' (from PATH) without a shell, in `Dir', with
%% `Env' added; its output, or an error with that output.
run(Name, Args, Dir, Env) ->
    Exe = case os:find_executable(Name) of
              false -> error({not_installed, Name, "see scripts/setup.sh"});
              Path -> Path
          end,
    Port = open_port({spawn_executable, Exe},
                     [{args, Args}, {cd, Dir}, {env, Env}, exit_status, stderr_to_stdout,
                      binary]),
    collect(Port, {Name, Args}, []).

collect(Port, Cmd, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, Cmd, [Acc, D]);
        {Port, {exit_status, 0}} -> iolist_to_binary(Acc);
        {Port, {exit_status, N}} -> error({failed, Cmd, N, iolist_to_binary(Acc)})
    after 60000 -> error({timeout, Cmd})
    end.

%% Waits up to Ms for a reconcile to have ended (none running, one done).
wait_reconciled(Ms) when Ms =< 0 ->
    ct:fail(reconcile_did_not_end);
wait_reconciled(Ms) ->
    case bc_gitops:status() of
        {ok, #{status := S, last_reconcile := At}} when S =/= reconciling, At =/= undefined -> ok;
        _ -> timer:sleep(50), wait_reconciled(Ms - 50)
    end.

%% Moves the test clock (bc_gitops_test_clock) on by Ms, and waits for the
%% reconcile that starts to end.
advance_and_wait(Ms) ->
    Self = self(),
    Ref = make_ref(),
    ok = telemetry:attach(Ref, [bc_gitops, reconcile, stop],
                          fun(_, _, _, _) -> Self ! {Ref, reconciled} end, none),
    try
        ok = bc_gitops_test_clock:advance(Ms),
        receive {Ref, reconciled} -> ok after 20000 -> ct:fail(no_reconcile) end,
        wait_reconciled(20000)
    after
        telemetry:detach(Ref)
    end.

%% The source of a gen_server `Module' that listens on 127.0.0.1:Port
%% (PortExpr: Erlang source of an expression giving it) and answers every
%% request with Status and Vsn as the body. It accepts with a short
%% timeout, so that system messages (suspend, code change) are handled
%% between connections: it upgrades hot.
web_server_src(Module, PortExpr, Vsn, Status) ->
    ["-module(", Module, ").\n-behaviour(gen_server).\n"
     "-export([start_link/0, init/1, handle_call/3, handle_cast/2, handle_info/2, code_change/3]).\n"
     "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n"
     "init([]) ->\n"
     "    {ok, L} = gen_tcp:listen(", PortExpr, ", [binary, {active, false}, {reuseaddr, true},\n"
     "                                    {ip, {127, 0, 0, 1}}]),\n"
     "    {ok, L, 0}.\n"
     "handle_call(_, _, L) -> {reply, ok, L, 0}.\n"
     "handle_cast(_, L) -> {noreply, L, 0}.\n"
     "handle_info(timeout, L) ->\n"
     "    case gen_tcp:accept(L, 20) of\n"
     "        {ok, S} -> serve(S);\n"
     "        {error, timeout} -> ok\n"
     "    end,\n"
     "    {noreply, L, 0};\n"
     "handle_info(_, L) -> {noreply, L, 0}.\n"
     "code_change(_, L, _) -> {ok, L}.\n"
     "serve(S) ->\n"
     "    _ = gen_tcp:recv(S, 0, 1000),\n"
     "    Body = <<\"", Vsn, "\">>,\n"
     "    _ = gen_tcp:send(S, [\"HTTP/1.1 ", Status, "\\r\\nContent-Length: \",\n"
     "                         integer_to_list(byte_size(Body)),\n"
     "                         \"\\r\\nConnection: close\\r\\n\\r\\n\", Body]),\n"
     "    gen_tcp:close(S).\n"].

%% The command as a release has it, under Dir: lib/bc_gitops/{ebin,priv}
%% with the script and the NIF in priv (ebin and the NIF are links to this
%% build). Returns the script's path.
install_cli(Dir) ->
    Lib = filename:join([Dir, "lib", "bc_gitops"]),
    Own = code:lib_dir(bc_gitops),
    Root = filename:join(Own, "../../../.."),
    ok = filelib:ensure_path(filename:join(Lib, "priv")),
    ok = file:make_symlink(filename:join(Own, "ebin"), filename:join(Lib, "ebin")),
    ok = file:make_symlink(filename:join(code:priv_dir(bc_gitops), "bc_gitops_nif.so"),
                           filename:join([Lib, "priv", "bc_gitops_nif.so"])),
    Script = filename:join([Lib, "priv", "bc_gitops"]),
    {ok, _} = file:copy(filename:join([Root, "priv", "bc_gitops"]), Script),
    ok = file:change_mode(Script, 8#755),
    Script.

%% Runs the command Script as a program (no shell) in Dir, where a crash
%% dump would land: {Exit, Output}. Opts are extra port options
%% (stderr_to_stdout to have both).
run_cli(Script, Args, Dir, Opts) ->
    {Env, Rest} = case lists:keytake(env, 1, Opts) of
                      {value, {env, E}, R} -> {E, R};
                      false -> {[], Opts}
                  end,
    Port = open_port({spawn_executable, Script},
                     [{args, Args}, {env, Env}, {cd, Dir}, exit_status, binary | Rest]),
    {Exit, Out} = collect_cli(Port, []),
    {Exit, unicode:characters_to_list(Out)}.

collect_cli(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect_cli(Port, [Acc, D]);
        {Port, {exit_status, S}} -> {S, iolist_to_binary(Acc)}
    after 120000 -> ct:fail({cli_timeout, iolist_to_binary(Acc)})
    end.
