%%% @doc Runs one health check of an app, never in the caller's process:
%%% each check runs in a process of its own with the spec's timeout, so a
%%% check that hangs or crashes is an unhealthy result, not a stuck caller.
%%%
%%% <ul>
%%% <li>`http': a GET of `http://127.0.0.1:Port Path' (`/' by default) on a
%%%     new connection; any 2xx is healthy. It runs on an httpc profile of
%%%     its own, so what the node's apps set on the default profile (a
%%%     proxy, say) never reaches a check;</li>
%%% <li>`tcp': a connect to 127.0.0.1:Port succeeds;</li>
%%% <li>`custom': `Module:check(App)' returns `ok'; `{error, Reason}', any
%%%     other value, a crash or a timeout is unhealthy. It runs where the
%%%     app runs: in its guest (over `erpc') for an `isolation => vm' app,
%%%     and a guest that is down is `{unhealthy, {guest_down, Why}}'.</li>
%%% </ul>
%%% A guest is on this host: `http' and `tcp' reach its ports on 127.0.0.1
%%% as any app's.
%%% Each check emits `[bc_gitops, health, check]' with `latency' (native
%%% time units) and metadata `app', `type', `result' (`healthy' or
%%% `unhealthy') and `reason'.
-module(bc_gitops_health).

-include("bc_gitops.hrl").

-export([check/2]).
-export([prober/2]).

-define(PROFILE, bc_gitops_health).

-type result() :: healthy | {unhealthy, term()}.
-export_type([result/0]).

%% @doc Checks `App' as `Spec' says.
-spec check(atom(), #health_spec{}) -> result().
check(App, #health_spec{type = Type, timeout = Timeout} = Spec) ->
    Start = erlang:monotonic_time(),
    {Pid, Ref} = spawn_monitor(?MODULE, prober, [App, Spec]),
    Result = receive
                 {'DOWN', Ref, process, Pid, {result, R}} -> R;
                 {'DOWN', Ref, process, Pid, Crash} -> {unhealthy, {crashed, Crash}}
             after Timeout ->
                 exit(Pid, kill),
                 receive {'DOWN', Ref, process, Pid, _} -> ok end,
                 {unhealthy, timeout}
             end,
    {Summary, Reason} = case Result of
                            healthy -> {healthy, undefined};
                            {unhealthy, Why} -> {unhealthy, Why}
                        end,
    bc_gitops_telemetry:execute([bc_gitops, health, check],
                                #{latency => erlang:monotonic_time() - Start},
                                #{app => App, type => Type, result => Summary, reason => Reason}),
    Result.

%% @private The checking process: its exit reason carries the result.
-spec prober(atom(), #health_spec{}) -> no_return().
prober(App, Spec) ->
    exit({result, probe(App, Spec)}).

-spec probe(atom(), #health_spec{}) -> result().
probe(_App, #health_spec{type = http, port = Port, path = Path, timeout = Timeout}) ->
    {ok, _} = application:ensure_all_started(inets),
    ok = ensure_profile(),
    Url = "http://127.0.0.1:" ++ integer_to_list(Port) ++ path(Path),
    case httpc:request(get, {Url, [{"connection", "close"}]},
                       [{timeout, Timeout}, {autoredirect, false}],
                       [{body_format, binary}], ?PROFILE) of
        {ok, {{_, Code, _}, _, _}} when Code >= 200, Code < 300 -> healthy;
        {ok, {{_, Code, _}, _, _}} -> {unhealthy, {http_status, Code}};
        {error, Why} -> {unhealthy, Why}
    end;
probe(_App, #health_spec{type = tcp, port = Port, timeout = Timeout}) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [], Timeout) of
        {ok, Socket} -> ok = gen_tcp:close(Socket), healthy;
        {error, Why} -> {unhealthy, Why}
    end;
probe(App, #health_spec{type = custom, module = Module, timeout = Timeout}) ->
    Result = case bc_gitops_vm:lookup(App) of
                 none -> Module:check(App);
                 {up, Node} -> erpc:call(Node, Module, check, [App], Timeout);
                 {down, _Node, Why} -> {error, {guest_down, Why}}
             end,
    case Result of
        ok -> healthy;
        {error, Reason} -> {unhealthy, Reason};
        Other -> {unhealthy, {bad_return, Other}}
    end.

%% The checks' httpc profile, started by the first check (under inets's
%% own supervisor, so it outlives the prober).
-spec ensure_profile() -> ok.
ensure_profile() ->
    case inets:start(httpc, [{profile, ?PROFILE}]) of
        {ok, _} -> ok;
        {error, {already_started, _}} -> ok
    end.

-spec path(binary() | undefined) -> string().
path(undefined) -> "/";
path(Path) -> unicode:characters_to_list(Path).
