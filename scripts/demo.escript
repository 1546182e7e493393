#!/usr/bin/env escript
%%! -noshell
%% The demo behind `make demo`: a real local gitops repository and a real
%% example app repository, reconciled by bc_gitops with its default runtime
%% on this node: the app is fetched from git, built, started, upgraded when
%% a commit says so, and a broken spec is reported without stopping
%% anything. Exits 0 only when everything it shows is as expected.
-mode(compile).

-include("../include/bc_gitops.hrl").

main(_) ->
    Ebin = filename:join([root(), "_build", "default", "lib", "bc_gitops", "ebin"]),
    true = code:add_patha(Ebin),
    Dir = filename:join(tmp(), "bc_gitops_demo_" ++ os:getpid()),
    logger:set_primary_config(level, error),
    try run(Dir) of
        ok -> io:format("~ndemo: ok~n"), halt(0)
    catch
        Class:Reason:Stack ->
            io:format("~ndemo FAILED: ~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    after
        _ = file:del_dir_r(Dir)
    end.

run(Dir) ->
    Gitops = filename:join(Dir, "gitops"),
    AppRepo = filename:join(Dir, "hello"),
    [init_repo(R) || R <- [Gitops, AppRepo]],

    step("1. an app repository (hello, v1.0.0) and a gitops repository that asks for it"),
    hello(AppRepo, "1.0.0", "Hello"),
    commit(AppRepo, "hello 1.0.0"),
    git(AppRepo, ["tag", "v1.0.0"]),
    spec(Gitops, AppRepo, "1.0.0", "#{greeting => <<\"world\">>}"),
    write(Gitops, "apps/.keep", ""),
    commit(Gitops, "deploy hello 1.0.0"),

    step("2. bc_gitops reconciles: fetch from git, build with rebar3, start"),
    {ok, _} = application:ensure_all_started(bc_gitops),
    {ok, _} = bc_gitops:start_reconciler(#{repo_url => Gitops,
                                           local_path => filename:join(Dir, "state"),
                                           reconcile_interval => 3600000}),
    ok = timed(fun bc_gitops:reconcile/0),
    <<"Hello, world! (1.0.0)">> = show_greeting(),
    show_status(),

    step("3. a commit asks for hello 1.1.0: new code whose code_change/3 turns the state into a map"),
    hello(AppRepo, "1.1.0", "Bonjour"),
    commit(AppRepo, "hello 1.1.0"),
    git(AppRepo, ["tag", "v1.1.0"]),
    spec(Gitops, AppRepo, "1.1.0", "#{greeting => <<\"le monde\">>}"),
    commit(Gitops, "upgrade hello to 1.1.0"),
    {ok, #{actions := [{upgrade, #app_spec{name = hello}, <<"1.0.0">>}]}} = bc_gitops:plan(),
    io:format("   plan   upgrade hello 1.0.0 -> 1.1.0~n"),
    PidBefore = whereis(hello_server),
    StateBefore = sys:get_state(hello_server),
    Self = self(),
    Handler = fun(_, _, Meta, _) -> Self ! {upgrade_stop, Meta} end,
    attach_telemetry(Handler),
    ok = timed(fun bc_gitops:reconcile/0),
    <<"Bonjour, le monde! (1.1.0)">> = show_greeting(),
    PidBefore = whereis(hello_server),
    StateAfter = sys:get_state(hello_server),
    io:format("   same process ~p; state ~p became ~p~n", [PidBefore, StateBefore, StateAfter]),
    #{greetings := 2, since := <<"1.0.0">>} = StateAfter,
    receive
        {upgrade_stop, #{path := hot, modules := Mods, suspended_us := Us}} ->
            io:format("   the upgrade was hot: modules ~p reloaded, processes suspended ~p us~n",
                      [Mods, Us])
    after 0 ->
        error(upgrade_was_not_hot)
    end,
    step("4. a broken spec is reported with file, line and field; hello keeps running"),
    write(Gitops, "apps/mailer/app.config",
          "#{name => mailer,\n  version => <<\"0.1.0\">>,\n  source => #{type => svn}}.\n"),
    commit(Gitops, "add a broken spec"),
    {error, {out_of_sync, #{spec_errors := [Error]}}} = bc_gitops:reconcile(),
    io:format("   error  ~s~n", [bc_gitops_specs:format_diagnostic(Error)]),
    <<"Bonjour, le monde! (1.1.0)">> = show_greeting(),
    show_status(),

    step("5. the app is removed from git: bc_gitops stops and unloads it"),
    ok = file:del_dir_r(filename:join([Gitops, "apps", "hello"])),
    ok = file:del_dir_r(filename:join([Gitops, "apps", "mailer"])),
    commit(Gitops, "remove hello"),
    ok = bc_gitops:reconcile(),
    false = lists:keyfind(hello, 1, application:which_applications()),
    false = code:is_loaded(hello_server),
    io:format("   hello is gone: not running, no module loaded~n"),
    ok = application:stop(bc_gitops).

%% Telemetry's API, when the real package is not there: a stand-in that
%% calls one handler, so the demo can show the upgrade's stop event.
attach_telemetry(Handler) ->
    Src = ["-module(telemetry).\n-export([execute/3]).\n",
           "execute(E, M, Meta) -> (persistent_term:get(demo_handler))(E, M, Meta, none).\n"],
    persistent_term:put(demo_handler, fun([bc_gitops, upgrade, stop] = E, M, Meta, C) ->
                                              Handler(E, M, Meta, C);
                                         (_, _, _, _) -> ok
                                      end),
    case code:is_loaded(telemetry) of
        false ->
            File = filename:join(tmp(), "telemetry.erl"),
            ok = file:write_file(File, Src),
            {ok, telemetry, Bin} = compile:file(File, [binary]),
            ok = file:delete(File),
            {module, telemetry} = code:load_binary(telemetry, File, Bin),
            ok;
        _ ->
            ok
    end.

timed(Fun) ->
    T0 = erlang:monotonic_time(millisecond),
    Result = Fun(),
    io:format("   reconcile -> ~p in ~p ms~n", [Result, erlang:monotonic_time(millisecond) - T0]),
    Result.

show_greeting() ->
    Greeting = hello_server:greet(),
    {ok, #app_state{version = V, pid = Pid}} = bc_gitops:get_app_status(hello),
    io:format("   hello ~s runs (top supervisor ~p): ~s~n", [V, Pid, Greeting]),
    Greeting.

show_status() ->
    {ok, S} = bc_gitops:status(),
    io:format("   status ~p, commit ~s, ~p app(s), ~p healthy~n",
              [maps:get(status, S), binary:part(maps:get(last_commit, S), 0, 7),
               maps:get(app_count, S), maps:get(healthy_count, S)]).

step(Text) -> io:format("~n~s~n", [Text]).

%% The example app: a supervisor and a gen_server that greets with the
%% `greeting' env the gitops repository sets.
hello(Repo, Vsn, Word) ->
    write(Repo, "rebar.config", "{erl_opts, [debug_info]}.\n"),
    write(Repo, "src/hello.app.src",
          ["{application, hello, [{vsn, \"", Vsn, "\"}, {mod, {hello_app, []}},\n"
           "  {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    write(Repo, "src/hello_app.erl",
          "-module(hello_app).\n-behaviour(application).\n-export([start/2, stop/1]).\n"
          "start(_, _) -> hello_sup:start_link().\nstop(_) -> ok.\n"),
    write(Repo, "src/hello_sup.erl",
          "-module(hello_sup).\n-behaviour(supervisor).\n-export([start_link/0, init/1]).\n"
          "start_link() -> supervisor:start_link({local, ?MODULE}, ?MODULE, []).\n"
          "init([]) -> {ok, {#{}, [#{id => s, start => {hello_server, start_link, []}}]}}.\n"),
    State = case Vsn of
                "1.0.0" ->
                    "init([]) -> {ok, 0}.\n"
                    "handle_call(greet, _, N) -> {reply, greeting(), N + 1}.\n"
                    "code_change(_, S, _) -> {ok, S}.\n";
                _ ->
                    "init([]) -> {ok, #{greetings => 0, since => <<\"new\">>}}.\n"
                    "handle_call(greet, _, #{greetings := N} = S) ->\n"
                    "    {reply, greeting(), S#{greetings := N + 1}}.\n"
                    "%% 1.0.0 kept a bare count; 1.1.0 keeps a map.\n"
                    "code_change(_, N, _) when is_integer(N) ->\n"
                    "    {ok, #{greetings => N, since => <<\"1.0.0\">>}}.\n"
            end,
    write(Repo, "src/hello_server.erl",
          ["-module(hello_server).\n-behaviour(gen_server).\n"
           "-export([start_link/0, greet/0, init/1, handle_call/3, handle_cast/2,\n"
           "         code_change/3]).\n"
           "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n"
           "greet() -> gen_server:call(?MODULE, greet).\n",
           State,
           "greeting() ->\n"
           "    {ok, Who} = application:get_env(hello, greeting),\n"
           "    iolist_to_binary([<<\"", Word, ", \">>, Who, <<\"! (", Vsn, ")\">>]).\n"
           "handle_cast(_, S) -> {noreply, S}.\n"]).

spec(Gitops, AppRepo, Vsn, Env) ->
    write(Gitops, "apps/hello/app.config",
          ["#{name => hello,\n  version => <<\"", Vsn, "\">>,\n",
           "  source => #{type => git, url => <<\"", AppRepo, "\">>, ref => <<\"v", Vsn, "\">>},\n",
           "  env => ", Env, "}.\n"]).

write(Repo, Rel, Content) ->
    Path = filename:join(Repo, Rel),
    ok = filelib:ensure_dir(Path),
    ok = file:write_file(Path, Content).

init_repo(Dir) ->
    ok = filelib:ensure_path(Dir),
    git(Dir, ["init", "-q", "-b", "main"]).

commit(Repo, Msg) ->
    git(Repo, ["add", "-A"]),
    git(Repo, ["-c", "user.name=demo", "-c", "user.email=demo@localhost",
               "commit", "-q", "-m", Msg]).

%% git without a shell, ignoring the machine's git config; any failure
%% stops the demo with git's output.
git(Repo, Args) ->
    Env = [{"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"}],
    Port = open_port({spawn_executable, os:find_executable("git")},
                     [{args, Args}, {cd, Repo}, {env, Env}, exit_status, stderr_to_stdout]),
    collect(Port, Args, []).

collect(Port, Args, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, Args, [Acc, D]);
        {Port, {exit_status, 0}} -> ok;
        {Port, {exit_status, N}} -> error({git_failed, Args, N, lists:flatten(Acc)})
    after 30000 -> error({git_timeout, Args})
    end.

root() -> filename:dirname(filename:dirname(filename:absname(escript:script_name()))).

tmp() ->
    case os:getenv("TMPDIR") of
        false -> "/tmp";
        "" -> "/tmp";
        T -> T
    end.
