%%% @doc Delivers the notifications of one `notify' target, in order, one
%%% at a time: a process per target, so a slow or dead endpoint holds up
%%% only its own queue.
%%%
%%% Each POST is asynchronous (httpc, a profile of its own) with a 5 s
%%% timeout, so this process keeps taking new notifications meanwhile.
%%% A failure (no connection, a timeout, a status other than 2xx) is tried
%%% again after 1, 2, 4 and 8 s (on the configured clock); after 5
%%% attempts the notification is dropped with a log line. At most 1,000
%%% wait; beyond that the oldest is dropped, logged. HTTPS is verified
%%% against the system's CAs and those of `ca_file' ({@link bc_gitops_tls}),
%%% read at each attempt, so a renewed CA file needs no restart. Log lines name the
%%% target by its number and its scheme, host and port only: a URL's path,
%%% query or credentials can be secret.
-module(bc_gitops_notify_sender).

-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/4, send/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, format_status/2]).

-define(ATTEMPTS, 5).
-define(BACKOFF_MS, 1000).
-define(TIMEOUT_MS, 5000).
-define(MAX_QUEUE, 1000).

-record(st, {
    index :: pos_integer(),
    target :: bc_gitops_notify:target(),
    %% scheme://host:port, for log lines.
    label :: binary(),
    clock :: module(),
    ca_file :: binary() | undefined,
    queue = queue:new() :: queue:queue({bc_gitops_notify:event(), binary()}),
    %% The notification being delivered, and its attempt.
    current :: {bc_gitops_notify:event(), binary(), pos_integer()} | undefined,
    request :: term(),
    retry :: reference() | undefined
}).

%% @doc Starts the sender of target number `Index'; HTTPS also trusts the
%% certificates of `CaFile' (the `ca_file' option).
-spec start_link(pos_integer(), bc_gitops_notify:target(), module(), binary() | undefined) ->
          {ok, pid()}.
start_link(Index, Target, Clock, CaFile) ->
    gen_server:start_link(?MODULE, {Index, Target, Clock, CaFile}, []).

%% @doc Queues `Body' (JSON) for delivery as `Event'.
-spec send(pid(), bc_gitops_notify:event(), binary()) -> ok.
send(Pid, Event, Body) ->
    gen_server:cast(Pid, {send, Event, Body}).

%% @private
-spec init({pos_integer(), bc_gitops_notify:target(), module(), binary() | undefined}) ->
          {ok, #st{}}.
init({Index, #{url := Url} = Target, Clock, CaFile}) ->
    Label = case uri_string:parse(Url) of
                #{scheme := Scheme, host := Host} = U ->
                    iolist_to_binary([Scheme, "://", Host,
                                      [[":", integer_to_binary(P)] || #{port := P} <- [U], is_integer(P)]]);
                _ ->
                    <<"?">>
            end,
    {ok, #st{index = Index, target = Target, label = Label, clock = Clock, ca_file = CaFile}}.

%% @private
-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}}.
handle_call(_Request, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast({send, Event, Body}, #st{queue = Queue} = St) ->
    Queue1 = case queue:len(Queue) >= ?MAX_QUEUE of
                 true ->
                     {{value, {Dropped, _}}, Rest} = queue:out(Queue),
                     log_dropped(Dropped, <<"too many waiting">>, St),
                     Rest;
                 false ->
                     Queue
             end,
    {noreply, next(St#st{queue = queue:in({Event, Body}, Queue1)})};
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private
-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info({http, {Request, Result}}, #st{request = Request} = St) ->
    St1 = St#st{request = undefined},
    case Result of
        {{_, Code, _}, _Headers, _Body} when Code >= 200, Code < 300 ->
            {noreply, next(St1#st{current = undefined})};
        {{_, Code, _}, _Headers, _Body} ->
            {noreply, failed({http_status, Code}, St1)};
        {error, Why} ->
            {noreply, failed(Why, St1)}
    end;
handle_info({retry, Ref}, #st{retry = Ref} = St) ->
    {noreply, post(St#st{retry = undefined})};
handle_info(_Other, St) ->
    {noreply, St}.

%% @private Crash reports show no URL and no secret.
-spec format_status(normal | terminate, [term()]) -> term().
format_status(_Opt, [_PDict, #st{index = I, label = Label, queue = Queue, current = Current}]) ->
    [{data, [{"State", #{target => I, host => Label, waiting => queue:len(Queue),
                         current => case Current of
                                        {Event, _Body, Attempt} -> {Event, Attempt};
                                        undefined -> undefined
                                    end}}]}];
format_status(_Opt, [_PDict, St]) ->
    [{data, [{"State", St}]}].

%% Starts the next delivery when none is under way.
-spec next(#st{}) -> #st{}.
next(#st{current = undefined, queue = Queue} = St) ->
    case queue:out(Queue) of
        {{value, {Event, Body}}, Rest} -> post(St#st{current = {Event, Body, 1}, queue = Rest});
        {empty, _} -> St
    end;
next(St) ->
    St.

-spec post(#st{}) -> #st{}.
post(#st{target = #{url := Url}, ca_file = CaFile} = St) ->
    case bc_gitops_tls:extra_cacerts(CaFile) of
        {ok, Extra} -> post(unicode:characters_to_list(Url), Extra, St);
        {error, Bad} -> failed(Bad, St)
    end.

-spec post(string(), [public_key:der_encoded()], #st{}) -> #st{}.
post(Url, Extra, #st{current = {Event, Body, _}, target = Target} = St) ->
    Signed = case Target of
                 #{secret := Secret} ->
                     [{"x-bc-gitops-signature",
                       "sha256=" ++ binary_to_list(bc_gitops_webhook:signature(Secret, Body))}];
                 _ ->
                     []
             end,
    Headers = [{"user-agent", "bc_gitops"}, {"x-bc-gitops-event", atom_to_list(Event)} | Signed],
    HttpOptions = [{timeout, ?TIMEOUT_MS}, {connect_timeout, ?TIMEOUT_MS}, {autoredirect, false}
                   | bc_gitops_tls:http_options(Url, Extra)],
    case httpc:request(post, {Url, Headers, "application/json", Body},
                       HttpOptions, [{sync, false}, {body_format, binary}],
                       bc_gitops_notify:http_profile()) of
        {ok, Request} -> St#st{request = Request};
        {error, Why} -> failed(Why, St)
    end.

%% A failed attempt: another after a backoff, or the notification dropped.
-spec failed(term(), #st{}) -> #st{}.
failed(Why, #st{current = {Event, Body, Attempt}, clock = Clock} = St) ->
    case Attempt < ?ATTEMPTS of
        true ->
            Ref = make_ref(),
            _ = Clock:send_after(?BACKOFF_MS bsl (Attempt - 1), self(), {retry, Ref}),
            St#st{current = {Event, Body, Attempt + 1}, retry = Ref};
        false ->
            log_dropped(Event, io_lib:format("~b attempts, the last: ~0tp", [Attempt, Why]), St),
            next(St#st{current = undefined})
    end.

-spec log_dropped(bc_gitops_notify:event(), iodata(), #st{}) -> ok.
log_dropped(Event, Why, #st{index = Index, label = Label}) ->
    ?LOG_WARNING("bc_gitops: notification ~ts to notify target ~b (~ts) dropped: ~ts",
                 [Event, Index, Label, bc_gitops_redact:scrub(Why)]).
