%%% @doc The HTTP face's listener: off by default, on loopback by default.
%%%
%%% A small server on `gen_tcp' in the ranch spirit: this process owns the
%%% listening socket and a pool of acceptors; each accepted connection gets
%%% a process of its own ({@link bc_gitops_http_conn}), which reads one
%%% request with OTP's HTTP parser, answers it through
%%% {@link bc_gitops_http_router} and closes. At most 256 connections are
%%% served at once; more are closed at once.
%%%
%%% The option is `http => #{port => P, ip => "127.0.0.1", token => T}':
%%% port 0 picks a free port ({@link port/0} says which); the default ip is
%%% loopback. With a token, every endpoint but the signed webhooks wants
%%% `Authorization: Bearer T'; a listener on any other address than
%%% loopback must have one, or the configuration is refused.
-module(bc_gitops_http).

-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/0, port/0, check_option/1, child_specs/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).
-export([acceptor/3]).

-export_type([options/0, conn_options/0]).

-type options() :: #{port := inet:port_number(), ip := inet:ip_address(), token => binary()}.

%% What a connection knows: no secret (those are in bc_gitops_redact).
-type conn_options() :: #{branch := binary(), cluster := boolean(), auth := boolean()}.

-define(ACCEPTORS, 4).
-define(MAX_CONNECTIONS, 256).
-define(MIN_TOKEN_BYTES, 8).

-record(st, {listen :: gen_tcp:socket(), port :: inet:port_number(),
             args :: {conn_options(), counters:counters_ref()},
             acceptors = [] :: [pid()]}).

%% @doc The listener's child spec when `Config' has an `http' map.
-spec child_specs(bc_gitops_config:config()) -> [supervisor:child_spec()].
child_specs(#{http := #{}}) ->
    [#{id => ?MODULE, start => {?MODULE, start_link, []}, restart => permanent,
       shutdown => 5000, type => worker, modules => [?MODULE]}];
child_specs(_Config) ->
    [].

%% @doc Starts listening as the running reconciler's `http' option says
%% (its configuration is read from it, so that no child spec, and no
%% supervisor report, carries a secret).
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc The port it listens on.
-spec port() -> {ok, inet:port_number()} | {error, not_running}.
port() ->
    try gen_server:call(?MODULE, port, 5000)
    catch exit:{noproc, _} -> {error, not_running}
    end.

%% @doc Checks the `http' option (for {@link bc_gitops_config}); throws
%% `{bad_config, http, Why}'.
-spec check_option(term()) -> false | options().
check_option(V) when V =:= false; V =:= undefined ->
    false;
check_option(#{} = V) ->
    Unknown = maps:keys(V) -- [port, ip, token],
    Unknown =:= [] orelse bad(io_lib:format("unknown keys ~p", [Unknown])),
    Port = maps:get(port, V, missing),
    is_integer(Port) andalso Port >= 0 andalso Port =< 65535
        orelse bad("port must be an integer 0..65535 (0 picks a free port)"),
    Ip = address(maps:get(ip, V, "127.0.0.1")),
    Token = case V of
                #{token := T} -> #{token => token(T)};
                _ -> #{}
            end,
    loopback(Ip) orelse map_size(Token) > 0
        orelse bad(io_lib:format("a listener on ~ts (not loopback) needs a token",
                                 [inet:ntoa(Ip)])),
    Token#{port => Port, ip => Ip};
check_option(_) ->
    bad("must be false or #{port => Port, ip => Address, token => Secret}").

-spec address(term()) -> inet:ip_address().
address(Ip) when is_tuple(Ip) ->
    case inet:ntoa(Ip) of
        {error, _} -> bad("ip must be an address such as \"127.0.0.1\" or \"::1\"");
        _ -> Ip
    end;
address(Ip) ->
    Text = try unicode:characters_to_list(Ip) catch _:_ -> error end,
    case is_list(Text) andalso inet:parse_strict_address(Text) of
        {ok, Parsed} -> Parsed;
        _ -> bad("ip must be an address such as \"127.0.0.1\" or \"::1\"")
    end.

%% The message never shows the token.
-spec token(term()) -> binary().
token(T) ->
    case catch unicode:characters_to_binary(T) of
        B when is_binary(B), byte_size(B) >= ?MIN_TOKEN_BYTES -> B;
        _ -> bad(io_lib:format("token must be a string of at least ~b bytes", [?MIN_TOKEN_BYTES]))
    end.

-spec loopback(inet:ip_address()) -> boolean().
loopback({127, _, _, _}) -> true;
loopback({0, 0, 0, 0, 0, 0, 0, 1}) -> true;
loopback({0, 0, 0, 0, 0, 16#ffff, Hi, _}) -> Hi bsr 8 =:= 127;
loopback(_) -> false.

-spec bad(iodata()) -> no_return().
bad(Why) ->
    throw({bad_config, http, iolist_to_binary(Why)}).

%%% gen_server

%% @private
-spec init([]) -> {ok, #st{}} | {stop, term()}.
init([]) ->
    case bc_gitops_reconciler:config() of
        {ok, Config} -> listen(Config);
        {error, Why} -> {stop, Why}
    end.

-spec listen(bc_gitops_config:config()) -> {ok, #st{}} | {stop, term()}.
listen(#{http := #{port := Port, ip := Ip} = Http, branch := Branch} = Config) ->
    process_flag(trap_exit, true),
    ok = bc_gitops_redact:remember(Config),
    Family = case tuple_size(Ip) of
                 4 -> inet;
                 8 -> inet6
             end,
    Options = [binary, Family, {ip, Ip}, {active, false}, {reuseaddr, true}, {backlog, 1024},
               {nodelay, true}, {send_timeout, 5000}, {send_timeout_close, true}],
    case gen_tcp:listen(Port, Options) of
        {ok, Listen} ->
            {ok, Actual} = inet:port(Listen),
            Args = {#{branch => Branch, cluster => is_map(maps:get(cluster, Config, false)),
                      auth => maps:is_key(token, Http)},
                    counters:new(1, [write_concurrency])},
            St = #st{listen = Listen, port = Actual, args = Args},
            ?LOG_NOTICE("bc_gitops: HTTP face on http://~ts/", [host_port(Ip, Actual)]),
            {ok, St#st{acceptors = [start_acceptor(St) || _ <- lists:seq(1, ?ACCEPTORS)]}};
        {error, Why} ->
            ok = bc_gitops_redact:forget(),
            {stop, {http_listen_failed, host_port(Ip, Port), Why}}
    end.

-spec host_port(inet:ip_address(), inet:port_number()) -> string().
host_port(Ip, Port) when tuple_size(Ip) =:= 8 -> "[" ++ inet:ntoa(Ip) ++ "]:" ++ integer_to_list(Port);
host_port(Ip, Port) -> inet:ntoa(Ip) ++ ":" ++ integer_to_list(Port).

%% @private
-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}}.
handle_call(port, _From, #st{port = Port} = St) ->
    {reply, {ok, Port}, St};
handle_call(_Request, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private An acceptor that died (it never should) is replaced.
-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info({'EXIT', Pid, Why}, #st{acceptors = Acceptors} = St) ->
    case lists:member(Pid, Acceptors) of
        true ->
            ?LOG_WARNING("bc_gitops: an HTTP acceptor stopped (~p); starting another", [Why]),
            {noreply, St#st{acceptors = [start_acceptor(St) | Acceptors -- [Pid]]}};
        false ->
            {noreply, St}
    end;
handle_info(_Other, St) ->
    {noreply, St}.

%% @private
-spec terminate(term(), #st{}) -> ok.
terminate(_Why, #st{listen = Listen}) ->
    _ = gen_tcp:close(Listen),
    bc_gitops_redact:forget().

-spec start_acceptor(#st{}) -> pid().
start_acceptor(#st{listen = Listen, args = {Opts, Count}}) ->
    proc_lib:spawn_link(?MODULE, acceptor, [Listen, Opts, Count]).

%% @private Accepts connections and hands each to a process of its own.
-spec acceptor(gen_tcp:socket(), conn_options(), counters:counters_ref()) -> ok.
acceptor(Listen, Opts, Count) ->
    case gen_tcp:accept(Listen) of
        {ok, Socket} ->
            ok = hand_over(Socket, Opts, Count),
            acceptor(Listen, Opts, Count);
        {error, closed} ->
            ok;
        {error, Why} ->
            %% Out of file descriptors, say: wait rather than spin.
            ?LOG_WARNING("bc_gitops: HTTP accept failed: ~p", [Why]),
            timer:sleep(100),
            acceptor(Listen, Opts, Count)
    end.

%% A process of its own for the connection, or a close when there are
%% too many.
-spec hand_over(gen_tcp:socket(), conn_options(), counters:counters_ref()) -> ok.
hand_over(Socket, Opts, Count) ->
    case counters:get(Count, 1) >= ?MAX_CONNECTIONS of
        true ->
            gen_tcp:close(Socket);
        false ->
            ok = counters:add(Count, 1, 1),
            Pid = proc_lib:spawn(bc_gitops_http_conn, serve, [Opts, Count]),
            case gen_tcp:controlling_process(Socket, Pid) of
                ok -> Pid ! {go, Socket}, ok;
                {error, _} -> gen_tcp:close(Socket)
            end
    end.
