%%% `make bench webhook': how fast a push reaches the node.
%%%
%%% (1) From a signed GitHub push webhook's last byte, as the listener
%%% received it, to the reconcile's start (its `[bc_gitops, reconcile,
%%% start]' event), one hook at a time on an idle node (the recording
%%% runtime, a few specs).
%%%
%%% (2) From `git push' (the git program pushing a commit that changes an
%%% app's version to a bare repository on disk) to the new version running,
%%% with the webhook a forge would send after it: the default runtime, a
%%% real app built from git with make, moved hot between 1.0.0 and 2.0.0,
%%% both builds already done (each direction alternately).
%%%
%%% The node's events are read through a `telemetry' module of its own,
%%% loaded for this section only.
-module(bench_webhook).

-export([rows/2]).

-define(SECRET, <<"bench-webhook-secret">>).

rows(Dir, Smoke) ->
    ok = load_telemetry(Dir),
    register(bench_events, self()),
    try
        latency_rows(Dir, Smoke) ++ push_rows(Dir, Smoke)
    after
        unregister(bench_events),
        _ = application:stop(bc_gitops),
        code:purge(telemetry),
        code:delete(telemetry)
    end.

%%% (1)

latency_rows(Dir, Smoke) ->
    Runs = case Smoke of true -> 10; false -> 300 end,
    Repo = filename:join(Dir, "hook_gitops"),
    [ok = write(filename:join([Repo, "apps", "h" ++ integer_to_list(I), "app.config"]),
                ["#{name => h", integer_to_list(I), ", version => <<\"1.0.0\">>, source => #{type => hex}}.\n"])
     || I <- lists:seq(1, 20)],
    ok = git(Repo, ["init", "-q", "-b", "main"]),
    ok = commit(Repo, "specs"),
    {ok, _} = application:ensure_all_started(bc_gitops),
    {ok, _} = bc_gitops:start_reconciler(#{repo_url => Repo, local_path => filename:join(Dir, "hook_state"),
                                           runtime_module => bench_runtime,
                                           reconcile_interval => 3600000,
                                           http => #{port => 0}, webhook_secret => ?SECRET}),
    ok = bc_gitops:reconcile(),
    {ok, Port} = bc_gitops:http_port(),
    flush(),
    Samples = [hook_to_start(Port) || _ <- lists:seq(1, Runs)],
    Server = lists:sort([S || {S, _} <- Samples]),
    Client = lists:sort([C || {_, C} <- Samples]),
    ok = application:stop(bc_gitops),
    [{io_lib:format("webhook last byte -> reconcile start (~p hooks)", [Runs]),
      pct(Server, 50), pct(Server, 99), undefined},
     {"  the same, from the client's last byte sent", pct(Client, 50), pct(Client, 99), undefined}].

%% One hook on an idle node: {from the listener's last byte, from the
%% client's}, in microseconds; returns once that reconcile has ended.
hook_to_start(Port) ->
    Body = <<"{\"ref\": \"refs/heads/main\", \"after\": \"0000\"}">>,
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}, {nodelay, true}]),
    ok = gen_tcp:send(S, request(Body)),
    Sent = erlang:monotonic_time(),
    {ok, <<"HTTP/1.1 202", _/binary>>} = gen_tcp:recv(S, 0, 10000),
    ok = gen_tcp:close(S),
    Start = receive {telemetry, _, [bc_gitops, reconcile, start], #{monotonic_time := T}, _} -> T
            after 10000 -> error(no_reconcile)
            end,
    Received = receive
                   {telemetry, At, [bc_gitops, webhook, received], #{latency := L}, #{result := triggered}} ->
                       At - L
               after 10000 ->
                   error(no_webhook_event)
               end,
    receive {telemetry, _, [bc_gitops, reconcile, stop], _, _} -> ok after 10000 -> error(no_end) end,
    flush(),
    {us(Start - Received), us(Start - Sent)}.

request(Body) ->
    ["POST /hooks/github HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n",
     "x-github-event: push\r\nx-hub-signature-256: sha256=", bc_gitops_webhook:signature(?SECRET, Body),
     "\r\ncontent-length: ", integer_to_list(byte_size(Body)), "\r\n\r\n", Body].

%%% (2)

push_rows(Dir, Smoke) ->
    Runs = case Smoke of true -> 2; false -> 20 end,
    Src = filename:join(Dir, "wb_src"),
    Bare = filename:join(Dir, "wb_gitops.git"),
    Clone = filename:join(Dir, "wb_gitops"),
    ok = git(Src, ["init", "-q", "-b", "main"]),
    ok = write(filename:join(Src, "Makefile"),
               "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n\tcp src/wb.app.src ebin/wb.app\n"),
    [begin ok = app_version(Src, V), ok = commit(Src, V), ok = git(Src, ["tag", V]) end
     || V <- ["1.0.0", "2.0.0"]],
    ok = filelib:ensure_path(Bare),
    ok = git(Bare, ["init", "-q", "--bare", "-b", "main"]),
    ok = git(Dir, ["clone", "-q", Bare, Clone]),
    ok = spec(Clone, Src, "1.0.0"),
    ok = commit(Clone, "wb 1.0.0"),
    ok = git(Clone, ["push", "-q", "origin", "main"]),
    {ok, _} = application:ensure_all_started(bc_gitops),
    {ok, _} = bc_gitops:start_reconciler(#{repo_url => Bare, local_path => filename:join(Dir, "wb_state"),
                                           reconcile_interval => 3600000,
                                           http => #{port => 0}, webhook_secret => ?SECRET}),
    ok = bc_gitops:reconcile(),
    {ok, Port} = bc_gitops:http_port(),
    %% Both builds done: up to 2.0.0 and back, untimed.
    _ = [push(Clone, Src, Port, V) || V <- ["2.0.0", "1.0.0"]],
    Samples = [push(Clone, Src, Port, V)
               || V <- lists:append(lists:duplicate(Runs div 2, ["2.0.0", "1.0.0"]))],
    ok = application:stop(bc_gitops),
    Total = lists:sort([T || {T, _} <- Samples]),
    Push = lists:sort([P || {_, P} <- Samples]),
    [{io_lib:format("git push -> new version running (hot, built; ~p pushes)", [length(Samples)]),
      pct(Total, 50), pct(Total, 99), undefined},
     {"  of which the git push itself", pct(Push, 50), pct(Push, 99), undefined}].

%% Commits the app at Version in the clone, then times `git push' and
%% the webhook to the version running: {total, push}, microseconds.
push(Clone, Src, Port, Version) ->
    ok = spec(Clone, Src, Version),
    ok = commit(Clone, "wb " ++ Version),
    flush(),
    T0 = erlang:monotonic_time(),
    ok = git(Clone, ["push", "-q", "origin", "main"]),
    T1 = erlang:monotonic_time(),
    Body = <<"{\"ref\": \"refs/heads/main\"}">>,
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}, {nodelay, true}]),
    ok = gen_tcp:send(S, request(Body)),
    {ok, <<"HTTP/1.1 202", _/binary>>} = gen_tcp:recv(S, 0, 10000),
    ok = gen_tcp:close(S),
    ok = running(Version, erlang:monotonic_time(millisecond) + 30000),
    T2 = erlang:monotonic_time(),
    Hot = receive
              {telemetry, _, [bc_gitops, upgrade, stop], _, #{path := P}} -> P
          after 10000 -> error(no_upgrade)
          end,
    hot = Hot,
    receive {telemetry, _, [bc_gitops, reconcile, stop], _, _} -> ok after 30000 -> error(no_end) end,
    {us(T2 - T0), us(T1 - T0)}.

%% Waits (1 ms at a time) until wb's running vsn is Version.
running(Version, Deadline) ->
    case lists:keyfind(wb, 1, application:which_applications()) of
        {wb, _, Version} ->
            ok;
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error({not_running, Version});
                false -> timer:sleep(1), running(Version, Deadline)
            end
    end.

spec(Clone, Src, Version) ->
    write(filename:join([Clone, "apps", "wb", "app.config"]),
          ["#{name => wb, version => <<\"", Version, "\">>,\n",
           "  source => #{type => git, url => <<\"", Src, "\">>, build => make}}.\n"]).

%% The app wb at Version: a supervisor and one gen_server that keeps a
%% count; the server's code differs between versions.
app_version(Src, Vsn) ->
    ok = write(filename:join([Src, "src", "wb.app.src"]),
               io_lib:format("~p.~n", [{application, wb,
                                        [{vsn, Vsn}, {modules, [wb_app, wb_srv]}, {registered, [wb_srv]},
                                         {applications, [kernel, stdlib]}, {mod, {wb_app, []}}]}])),
    ok = write(filename:join([Src, "src", "wb_app.erl"]),
               "-module(wb_app).\n-behaviour(application).\n-behaviour(supervisor).\n"
               "-export([start/2, stop/1, init/1]).\n"
               "start(_, _) -> supervisor:start_link({local, wb_sup}, ?MODULE, []).\nstop(_) -> ok.\n"
               "init([]) -> {ok, {#{}, [#{id => srv, start => {wb_srv, start_link, []},"
               " modules => [wb_srv]}]}}.\n"),
    write(filename:join([Src, "src", "wb_srv.erl"]),
          ["-module(wb_srv).\n-behaviour(gen_server).\n-vsn(\"", Vsn, "\").\n"
           "-export([start_link/0, init/1, handle_call/3, handle_cast/2, code_change/3]).\n"
           "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n"
           "init([]) -> {ok, 0}.\n"
           "handle_call(version, _, N) -> {reply, {\"", Vsn, "\", N}, N + 1}.\n"
           "handle_cast(_, N) -> {noreply, N}.\n"
           "code_change(_, N, _) -> {ok, N}.\n"]).

%%% Helpers

%% A `telemetry' of the bench's own: every event, with the time it came,
%% to the process registered as bench_events.
load_telemetry(Dir) ->
    Src = filename:join(Dir, "telemetry.erl"),
    ok = write(Src, "-module(telemetry).\n-export([execute/3]).\n"
                    "execute(Event, Measurements, Meta) ->\n"
                    "    case whereis(bench_events) of\n"
                    "        undefined -> ok;\n"
                    "        Pid -> Pid ! {telemetry, erlang:monotonic_time(), Event, Measurements, Meta}, ok\n"
                    "    end.\n"),
    {ok, telemetry, Bin} = compile:file(Src, [binary, report]),
    {module, telemetry} = code:load_binary(telemetry, Src, Bin),
    ok.

flush() ->
    receive {telemetry, _, _, _, _} -> flush() after 0 -> ok end.

us(Native) ->
    erlang:convert_time_unit(Native, native, microsecond).

pct(Sorted, P) ->
    lists:nth(max(1, min(length(Sorted), round(P / 100 * length(Sorted)))), Sorted).

write(Path, Text) ->
    ok = filelib:ensure_dir(Path),
    file:write_file(Path, Text).

commit(Repo, Message) ->
    ok = git(Repo, ["add", "-A"]),
    git(Repo, ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", Message]).

git(Dir, Args) ->
    ok = filelib:ensure_path(Dir),
    Env = [{"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"}],
    Port = open_port({spawn_executable, os:find_executable("git")},
                     [{args, Args}, {cd, Dir}, {env, Env}, exit_status, stderr_to_stdout]),
    receive {Port, {exit_status, 0}} -> ok; {Port, {exit_status, S}} -> {error, {git, Args, S}} end.
