%%% An HTTP/1.1 client for the HTTP face's tests, on gen_tcp, so that a
%%% test controls every byte (bad requests, stalls), and a few receivers
%%% for outgoing notifications: real servers on loopback that record what
%%% they get and answer 200, 500 or never.
-module(bc_gitops_http_client).

-export([request/4, request/5, raw/2, parse/1, json/3, hook/4, sign/2]).
-export([receiver/1, receiver/2, received/2, received/3, stop_receiver/1]).

%% Method, path, headers, body on 127.0.0.1:Port: {Status, Headers, Body}
%% (header names in lowercase).
request(Port, Method, Path, Headers) ->
    request(Port, Method, Path, Headers, <<>>).

request(Port, Method, Path, Headers, Body) ->
    Head = [Method, " ", Path, " HTTP/1.1\r\nhost: 127.0.0.1\r\n",
            [[K, ": ", V, "\r\n"] || {K, V} <- Headers],
            case Body of
                <<>> -> [];
                _ -> ["content-length: ", integer_to_list(iolist_size(Body)), "\r\n"]
            end, "\r\n"],
    parse(raw(Port, [Head, Body])).

%% Sends Bytes and returns everything the server sent until it closed.
raw(Port, Bytes) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}], 5000),
    ok = gen_tcp:send(S, Bytes),
    read_all(S, []).

read_all(S, Acc) ->
    case gen_tcp:recv(S, 0, 15000) of
        {ok, Data} -> read_all(S, [Acc, Data]);
        {error, closed} -> gen_tcp:close(S), iolist_to_binary(Acc);
        {error, Why} -> gen_tcp:close(S), error({no_answer, Why, iolist_to_binary(Acc)})
    end.

%% An answer's status, headers and body.
parse(Bin) ->
    {ok, {http_response, _, Status, _}, Rest} = erlang:decode_packet(http_bin, Bin, []),
    headers(Rest, Status, #{}).

headers(Bin, Status, Acc) ->
    case erlang:decode_packet(httph_bin, Bin, []) of
        {ok, {http_header, _, Name, _, Value}, Rest} ->
            Key = string:lowercase(if is_atom(Name) -> atom_to_binary(Name, latin1); true -> Name end),
            headers(Rest, Status, Acc#{Key => Value});
        {ok, http_eoh, Body} ->
            {Status, Acc, Body}
    end.

%% A GET whose answer is JSON: {Status, Decoded}.
json(Port, Path, Headers) ->
    {Status, _, Body} = request(Port, "GET", Path, Headers),
    {ok, Term} = bc_gitops_json:decode(Body),
    {Status, Term}.

%% A webhook signed as its source wants: github (Event the X-GitHub-Event),
%% gitlab (Event the X-Gitlab-Event) or generic.
hook(Port, {Source, Event, Secret}, Body, Extra) ->
    Headers = case Source of
                  github -> [{"x-github-event", Event}, {"x-hub-signature-256", sign(Secret, Body)}];
                  gitlab -> [{"x-gitlab-event", Event}, {"x-gitlab-token", Secret}];
                  generic -> [{"x-hub-signature-256", sign(Secret, Body)}]
              end,
    request(Port, "POST", "/hooks/" ++ atom_to_list(Source),
            [{"content-type", "application/json"} | Headers] ++ Extra, Body).

sign(Secret, Body) ->
    "sha256=" ++ binary_to_list(bc_gitops_webhook:signature(iolist_to_binary(Secret), Body)).

%% A server on 127.0.0.1 that sends each request it gets to the caller as
%% {received, Pid, Headers, Body}, and answers `ok' (200), `error' (500)
%% or, `silent', never. {Pid, Port}.
receiver(Mode) ->
    receiver(Mode, tcp).

%% The same over TLS with `{tls, SslServerOptions}'; a client that refuses
%% the certificate is reported as {refused, Pid, Why}.
receiver(Mode, Transport) ->
    Owner = self(),
    Pid = spawn_link(fun() ->
                             Opts = [binary, {active, false}, {reuseaddr, true},
                                     {ip, {127, 0, 0, 1}}, {packet, http_bin}],
                             {ok, L} = listen(Transport, Opts),
                             {ok, {_, Port}} = sockname(L),
                             Owner ! {self(), port, Port},
                             accept(L, Owner, Mode)
                     end),
    receive {Pid, port, Port} -> {Pid, Port} end.

listen(tcp, Opts) -> gen_tcp:listen(0, Opts);
listen({tls, SslOpts}, Opts) -> ssl:listen(0, Opts ++ SslOpts).

sockname(S) when is_port(S) -> inet:sockname(S);
sockname(S) -> ssl:sockname(S).

accept(L, Owner, Mode) when is_port(L) ->
    {ok, S} = gen_tcp:accept(L),
    serve_in_own_process(S, Owner, Mode),
    accept(L, Owner, Mode);
accept(L, Owner, Mode) ->
    {ok, T} = ssl:transport_accept(L),
    case ssl:handshake(T, 5000) of
        {ok, S} -> serve_in_own_process(S, Owner, Mode);
        {error, Why} -> Owner ! {refused, self(), Why}
    end,
    accept(L, Owner, Mode).

serve_in_own_process(S, Owner, Mode) ->
    Me = self(),
    Conn = spawn_link(fun() -> receive go -> serve(S, Owner, Me, Mode) end end),
    ok = controlling_process(S, Conn),
    Conn ! go.

serve(S, Owner, Receiver, Mode) ->
    {ok, {http_request, _, _, _}} = recv(S, 0),
    Headers = read_headers(S, #{}),
    Length = binary_to_integer(maps:get(<<"content-length">>, Headers, <<"0">>)),
    ok = setopts(S, [{packet, raw}]),
    {ok, Body} = case Length of
                     0 -> {ok, <<>>};
                     _ -> recv(S, Length)
                 end,
    Owner ! {received, Receiver, Headers, Body},
    case Mode of
        silent ->
            receive never -> ok end;
        _ ->
            Status = case Mode of ok -> "200 OK"; error -> "500 Internal Server Error" end,
            ok = send(S, ["HTTP/1.1 ", Status, "\r\ncontent-length: 0\r\n",
                          "connection: close\r\n\r\n"]),
            close(S)
    end.

read_headers(S, Acc) ->
    case recv(S, 0) of
        {ok, {http_header, _, Name, _, Value}} ->
            Key = string:lowercase(if is_atom(Name) -> atom_to_binary(Name, latin1); true -> Name end),
            read_headers(S, Acc#{Key => Value});
        {ok, http_eoh} ->
            Acc
    end.

%% gen_tcp or ssl, as the socket is.
recv(S, N) when is_port(S) -> gen_tcp:recv(S, N, 5000);
recv(S, N) -> ssl:recv(S, N, 5000).

setopts(S, Opts) when is_port(S) -> inet:setopts(S, Opts);
setopts(S, Opts) -> ssl:setopts(S, Opts).

send(S, Data) when is_port(S) -> gen_tcp:send(S, Data);
send(S, Data) -> ssl:send(S, Data).

close(S) when is_port(S) -> gen_tcp:close(S);
close(S) -> ssl:close(S).

controlling_process(S, Pid) when is_port(S) -> gen_tcp:controlling_process(S, Pid);
controlling_process(S, Pid) -> ssl:controlling_process(S, Pid).

%% The requests Receiver got within Ms: [{Headers, Body}].
received(Receiver, Ms) ->
    received(Receiver, Ms, []).

received(Receiver, Ms, Acc) ->
    receive
        {received, Receiver, Headers, Body} -> received(Receiver, Ms, [{Headers, Body} | Acc])
    after Ms ->
        lists:reverse(Acc)
    end.

stop_receiver(Pid) ->
    unlink(Pid),
    exit(Pid, kill),
    ok.
