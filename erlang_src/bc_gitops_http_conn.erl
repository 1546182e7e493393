%%% @doc One HTTP connection: reads one request, answers it, closes.
%%%
%%% The request line and headers are read with OTP's HTTP parser
%%% (`erlang:decode_packet/3'), the body by its `Content-Length'. Limits, each
%%% a clear status rather than a stuck or crashed process:
%%% <ul>
%%% <li>the whole request (head and body) within 5 s, or 408: a client that
%%%     sends its headers a byte at a time is cut at that deadline;</li>
%%% <li>a line longer than 8 KiB: 414 (the request line) or 431 (a
%%%     header); more than 64 headers or 16 KiB of them: 431;</li>
%%% <li>a body over 1 MiB: 413, before it is read; a chunked body: 411;</li>
%%% <li>anything the parser does not take: 400.</li>
%%% </ul>
%%% Every answer closes the connection (`Connection: close'). Everything
%%% written goes through {@link bc_gitops_redact:scrub/1}. A crash while
%%% answering is a 500 and one log line, scrubbed too.
-module(bc_gitops_http_conn).

-include_lib("kernel/include/logger.hrl").

-export([serve/2]).

-export_type([request/0, response/0]).

-define(REQUEST_TIMEOUT, 5000).
-define(MAX_LINE, 8192).
-define(MAX_HEADERS, 64).
-define(MAX_HEAD_BYTES, 16384).
-define(MAX_BODY, 1048576).

-type request() :: #{method := binary(), path := binary(), query := binary(),
                     headers := #{binary() => binary()}, body := binary(),
                     %% erlang:monotonic_time() when the last byte came.
                     received_at := integer()}.
-type response() :: {100..599, [{binary(), iodata()}], iodata()}.

%% @private Waits for the socket from the acceptor, then serves it.
-spec serve(bc_gitops_http:conn_options(), counters:counters_ref()) -> ok.
serve(Opts, Count) ->
    try
        receive
            {go, Socket} -> handle(Socket, Opts)
        after 5000 ->
            ok
        end
    after
        counters:sub(Count, 1, 1)
    end.

-spec handle(gen_tcp:socket(), bc_gitops_http:conn_options()) -> ok.
handle(Socket, Opts) ->
    Deadline = erlang:monotonic_time(millisecond) + ?REQUEST_TIMEOUT,
    case read(Socket, Deadline) of
        closed ->
            gen_tcp:close(Socket);
        Read ->
            Method = case Read of
                         {ok, #{method := M}} -> M;
                         _ -> <<"GET">>
                     end,
            respond(Socket, Method, answer(Read, Opts)),
            linger_close(Socket)
    end.

-spec answer({ok, request()} | {error, 400..499, map()}, bc_gitops_http:conn_options()) ->
    response().
answer(Read, Opts) ->
    try
        case Read of
            {ok, Req} -> bc_gitops_http_router:handle(Req, Opts);
            {error, Status, Partial} -> bc_gitops_http_router:refuse(Status, Partial)
        end
    catch
        Class:Reason ->
            ?LOG_ERROR("bc_gitops: HTTP request failed: ~ts",
                       [bc_gitops_redact:scrub(io_lib:format("~0tp", [{Class, Reason}]))]),
            bc_gitops_http_router:error_response(500, internal_error, <<"internal error">>)
    end.

%%% Reading

%% The request line and headers are parsed from a buffer of our own with
%% erlang:decode_packet/3 (OTP's HTTP parser), so that a line too long or
%% too many headers get their answer: the socket's own packet mode closes
%% the connection on an oversized line.
-spec read(gen_tcp:socket(), integer()) -> {ok, request()} | {error, 400..499, map()} | closed.
read(Socket, Deadline) ->
    case packet(Socket, Deadline, http_bin, <<>>, 414) of
        {ok, {http_request, Method, {abs_path, Target}, _Version}, Rest} ->
            [Path | Query] = binary:split(Target, <<"?">>),
            Req = #{method => method(Method), path => Path, query => iolist_to_binary(Query)},
            headers(Socket, Deadline, Req, Rest, #{}, 0);
        {ok, {http_request, Method, _Other, _Version}, _} ->
            {error, 400, #{method => method(Method)}};
        {ok, _NotARequestLine, _} ->
            {error, 400, #{}};
        {error, Status} ->
            {error, Status, #{}};
        closed ->
            closed
    end.

-spec headers(gen_tcp:socket(), integer(), map(), binary(), #{binary() => binary()},
              non_neg_integer()) -> {ok, request()} | {error, 400..499, map()} | closed.
headers(Socket, Deadline, Req, Buffer, Headers, Count) ->
    case packet(Socket, Deadline, httph_bin, Buffer, 431) of
        {ok, {http_header, _, Name, _, Value}, Rest} ->
            Key = string:lowercase(header_name(Name)),
            Joined = case Headers of
                         #{Key := Before} -> <<Before/binary, ", ", Value/binary>>;
                         _ -> Value
                     end,
            Headers1 = Headers#{Key => Joined},
            case Count >= ?MAX_HEADERS orelse size_of(Headers1) > ?MAX_HEAD_BYTES of
                true -> {error, 431, Req};
                false -> headers(Socket, Deadline, Req, Rest, Headers1, Count + 1)
            end;
        {ok, http_eoh, Rest} ->
            body(Socket, Deadline, Req#{headers => Headers}, Rest);
        {ok, _Malformed, _} ->
            {error, 400, Req};
        {error, Status} ->
            {error, Status, Req};
        closed ->
            closed
    end.

%% The next packet of `Type' from `Buffer', reading more as needed; a
%% line longer than 8 KiB is `TooLong'.
-spec packet(gen_tcp:socket(), integer(), http_bin | httph_bin, binary(), 414 | 431) ->
    {ok, term(), binary()} | {error, 400..499} | closed.
packet(Socket, Deadline, Type, Buffer, TooLong) ->
    case erlang:decode_packet(Type, Buffer, []) of
        {ok, Packet, Rest} ->
            {ok, Packet, Rest};
        {more, _} when byte_size(Buffer) > ?MAX_LINE ->
            {error, TooLong};
        {more, _} ->
            case recv(Socket, 0, Deadline) of
                {ok, Data} -> packet(Socket, Deadline, Type, <<Buffer/binary, Data/binary>>, TooLong);
                {error, timeout} -> {error, 408};
                {error, _Closed} -> closed
            end;
        {error, _} ->
            {error, 400}
    end.

-spec size_of(#{binary() => binary()}) -> non_neg_integer().
size_of(Headers) ->
    maps:fold(fun(K, V, N) -> N + byte_size(K) + byte_size(V) + 4 end, 0, Headers).

-spec body(gen_tcp:socket(), integer(), map(), binary()) ->
    {ok, request()} | {error, 400..499, map()} | closed.
body(Socket, Deadline, #{headers := Headers} = Req, Buffered) ->
    case {Headers, length_of(Headers)} of
        {#{<<"transfer-encoding">> := _}, _} ->
            {error, 411, Req};
        {_, bad} ->
            {error, 400, Req};
        {_, Length} when Length > ?MAX_BODY ->
            {error, 413, Req};
        {_, Length} when byte_size(Buffered) >= Length ->
            {ok, Req#{body => binary:part(Buffered, 0, Length),
                      received_at => erlang:monotonic_time()}};
        {_, Length} ->
            %% curl asks before it sends a body of more than 1 KiB.
            _ = string:lowercase(maps:get(<<"expect">>, Headers, <<>>)) =:= <<"100-continue">>
                andalso gen_tcp:send(Socket, <<"HTTP/1.1 100 Continue\r\n\r\n">>),
            case recv(Socket, Length - byte_size(Buffered), Deadline) of
                {ok, Rest} -> {ok, Req#{body => <<Buffered/binary, Rest/binary>>,
                                        received_at => erlang:monotonic_time()}};
                {error, timeout} -> {error, 408, Req};
                {error, _Closed} -> closed
            end
    end.

-spec length_of(#{binary() => binary()}) -> non_neg_integer() | bad.
length_of(#{<<"content-length">> := Text}) ->
    try binary_to_integer(string:trim(Text)) of
        N when N >= 0 -> N;
        _ -> bad
    catch
        error:badarg -> bad
    end;
length_of(_) ->
    0.

-spec recv(gen_tcp:socket(), non_neg_integer(), integer()) -> {ok, term()} | {error, term()}.
recv(Socket, Length, Deadline) ->
    case Deadline - erlang:monotonic_time(millisecond) of
        Left when Left > 0 -> gen_tcp:recv(Socket, Length, Left);
        _ -> {error, timeout}
    end.

-spec method(atom() | binary()) -> binary().
method(M) when is_atom(M) -> atom_to_binary(M, latin1);
method(M) -> M.

-spec header_name(atom() | binary() | string()) -> binary().
header_name(N) when is_atom(N) -> atom_to_binary(N, latin1);
header_name(N) when is_list(N) -> list_to_binary(N);
header_name(N) -> N.

%%% Writing

-spec respond(gen_tcp:socket(), binary(), response()) -> ok.
respond(Socket, Method, {Status, Headers, Body}) ->
    Clean = bc_gitops_redact:scrub(Body),
    Head = [<<"HTTP/1.1 ">>, integer_to_binary(Status), " ", reason(Status), "\r\n",
            [[Name, ": ", Value, "\r\n"] || {Name, Value} <- Headers],
            "content-length: ", integer_to_binary(byte_size(Clean)), "\r\n",
            "connection: close\r\ncache-control: no-store\r\n",
            "x-content-type-options: nosniff\r\n\r\n"],
    _ = gen_tcp:send(Socket, case Method of
                                 <<"HEAD">> -> Head;
                                 _ -> [Head, Clean]
                             end),
    ok.

%% Closes after the client has read the answer: a close with unread input
%% would reset the connection and could lose the answer (a 413 sent
%% before the body was read).
-spec linger_close(gen_tcp:socket()) -> ok.
linger_close(Socket) ->
    _ = gen_tcp:shutdown(Socket, write),
    drain(Socket, erlang:monotonic_time(millisecond) + 1000, ?MAX_BODY),
    gen_tcp:close(Socket).

-spec drain(gen_tcp:socket(), integer(), integer()) -> ok.
drain(_Socket, _Deadline, Left) when Left =< 0 ->
    ok;
drain(Socket, Deadline, Left) ->
    case recv(Socket, 0, Deadline) of
        {ok, Data} -> drain(Socket, Deadline, Left - byte_size(Data));
        {error, _} -> ok
    end.

-spec reason(100..599) -> binary().
reason(200) -> <<"OK">>;
reason(202) -> <<"Accepted">>;
reason(400) -> <<"Bad Request">>;
reason(401) -> <<"Unauthorized">>;
reason(404) -> <<"Not Found">>;
reason(405) -> <<"Method Not Allowed">>;
reason(408) -> <<"Request Timeout">>;
reason(411) -> <<"Length Required">>;
reason(413) -> <<"Payload Too Large">>;
reason(414) -> <<"URI Too Long">>;
reason(431) -> <<"Request Header Fields Too Large">>;
reason(500) -> <<"Internal Server Error">>;
reason(503) -> <<"Service Unavailable">>;
reason(504) -> <<"Gateway Timeout">>;
reason(_) -> <<"Unknown">>.
