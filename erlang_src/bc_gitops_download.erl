%%% @doc Streaming HTTP(S) download of one URL into one file: the download
%%% part of the `release' source type ({@link bc_gitops_release}).
%%%
%%% <ul>
%%% <li>`httpc' runs on its own profile, `bc_gitops', never the default one.
%%%     `crypto', `public_key', `ssl' and `inets' are started on demand.</li>
%%% <li>The body is streamed into the file, which is created (it must not
%%%     exist) and hashed with SHA-256 as it arrives. A body larger than
%%%     `max_bytes', announced by Content-Length or counted while streaming,
%%%     aborts the download.</li>
%%% <li>Redirects (301, 302, 303, 307, 308) are followed, at most 5, to
%%%     `http' or `https' URLs only. `timeout' covers the whole download,
%%%     redirects included.</li>
%%% <li>HTTPS certificates are always verified, against the operating
%%%     system's CA store plus the certificates of `ca_file'
%%%     ({@link bc_gitops_tls}).</li>
%%% <li>If the process `caller' exits, the download is abandoned.</li>
%%% </ul>
%%% On error the file, if this module created it, is deleted.
%%%
%%% Errors: `{http_status, Code}', `{download_failed, Reason}' (`timeout'
%%% included), `{too_large, MaxBytes}', `{too_many_redirects, Url}',
%%% `{bad_redirect, Location}', `{bad_ca_file, File, Reason}',
%%% `{file_error, open | write, File, Reason}'.
-module(bc_gitops_download).

-export([url/1, to_file/3]).

-export_type([options/0]).

-type options() :: #{
    timeout := pos_integer(),
    max_bytes := pos_integer(),
    ca_file := file:filename_all() | undefined,
    caller := pid()
}.

-define(PROFILE, bc_gitops).
-define(MAX_REDIRECTS, 5).

%% @doc `Url' (a binary or a string) as a string, if it is an absolute `http'
%% or `https' URL with a host; else `error'.
-spec url(term()) -> {ok, string()} | error.
url(Url) when is_binary(Url); is_list(Url) ->
    case unicode:characters_to_list(Url) of
        S when is_list(S) ->
            case scheme(S) of
                {ok, _} -> {ok, S};
                error -> error
            end;
        _ ->
            error
    end;
url(_Url) ->
    error.

%% @doc Streams `Url' (as {@link url/1} accepts it) into `File', which must
%% not exist, and returns the body's SHA-256 in lowercase hex. Options:
%% `timeout' (milliseconds for the whole download), `max_bytes' (the largest
%% body accepted), `ca_file' (a PEM file of extra CA certificates, or
%% `undefined'), `caller' (the download is abandoned with
%% `{download_failed, caller_down}' if that process exits).
-spec to_file(Url :: string(), File :: file:filename(), Opts :: options()) ->
          {ok, Sha256Hex :: binary()} | {error, term()}.
to_file(Url, File, #{timeout := Timeout, ca_file := CaFile, caller := Caller} = Opts) ->
    try
        start_apps(),
        CaCerts = case bc_gitops_tls:extra_cacerts(CaFile) of
                      {ok, Ders} -> Ders;
                      {error, Bad} -> fail(Bad)
                  end,
        Deadline = erlang:monotonic_time(millisecond) + Timeout,
        CallerRef = erlang:monitor(process, Caller),
        try
            {ok, get_url(Url, Opts#{deadline => Deadline, extra_cacerts => CaCerts,
                                    caller_ref => CallerRef, file => File}, 0)}
        after
            erlang:demonitor(CallerRef, [flush])
        end
    catch
        throw:{?MODULE, Why} -> {error, Why}
    end.

-spec fail(term()) -> no_return().
fail(Why) ->
    throw({?MODULE, Why}).

-spec start_apps() -> ok.
start_apps() ->
    lists:foreach(fun(App) ->
                          case application:ensure_all_started(App) of
                              {ok, _} -> ok;
                              {error, Why} -> fail({download_failed, {start, App, Why}})
                          end
                  end, [crypto, public_key, ssl, inets]),
    case inets:start(httpc, [{profile, ?PROFILE}]) of
        {ok, _} -> ok;
        {error, {already_started, _}} -> ok;
        {error, Why} -> fail({download_failed, {httpc_profile, Why}})
    end.

%% One request: the file is created for it, and deleted if anything fails
%% or the answer is a redirect.
-spec get_url(string(), map(), non_neg_integer()) -> binary().
get_url(Url, _Opts, Redirects) when Redirects > ?MAX_REDIRECTS ->
    fail({too_many_redirects, Url});
get_url(Url, #{file := File} = Opts, Redirects) ->
    Fd = case file:open(File, [write, raw, binary, exclusive]) of
             {ok, F} -> F;
             {error, Why} -> fail({file_error, open, File, Why})
         end,
    Outcome =
        try
            request(Url, Fd, Opts)
        catch
            Class:Reason:Stack ->
                _ = file:close(Fd),
                _ = file:delete(File),
                erlang:raise(Class, Reason, Stack)
        end,
    _ = file:close(Fd),
    case Outcome of
        {done, Hex} ->
            Hex;
        {redirect, Location} ->
            _ = file:delete(File),
            Next = case redirect_target(Url, Location) of
                       {ok, N} -> N;
                       error -> fail({bad_redirect, Location})
                   end,
            get_url(Next, Opts, Redirects + 1)
    end.

-spec request(string(), file:io_device(), map()) -> {done, binary()} | {redirect, string()}.
request(Url, Fd, Opts) ->
    Left = max(1, remaining(Opts)),
    HttpOpts = [{timeout, Left}, {connect_timeout, Left}, {autoredirect, false}
                | bc_gitops_tls:http_options(Url, maps:get(extra_cacerts, Opts))],
    ReqOpts = [{sync, false}, {stream, {self, once}}, {body_format, binary}],
    ReqId = case httpc:request(get, {Url, [{"user-agent", "bc_gitops"}]}, HttpOpts, ReqOpts,
                               ?PROFILE) of
                {ok, Id} -> Id;
                {error, Why} -> fail({download_failed, Why})
            end,
    State = #{ctx => crypto:hash_init(sha256), size => 0, fd => Fd},
    try
        receive_loop(ReqId, State, Opts)
    catch
        throw:{?MODULE, _} = Error ->
            _ = httpc:cancel_request(ReqId, ?PROFILE),
            throw(Error)
    end.

-spec remaining(map()) -> non_neg_integer().
remaining(#{deadline := Deadline}) ->
    max(0, Deadline - erlang:monotonic_time(millisecond)).

-spec redirect_target(string(), string()) -> {ok, string()} | error.
redirect_target(Base, Location) ->
    try uri_string:resolve(Location, Base) of
        Next when is_list(Next) ->
            case scheme(Next) of
                {ok, _} -> {ok, Next};
                error -> error
            end;
        _ ->
            error
    catch
        _:_ -> error
    end.

%% The scheme of an absolute http(s) URL with a host.
-spec scheme(string()) -> {ok, http | https} | error.
scheme(S) ->
    case uri_string:parse(S) of
        #{scheme := Scheme, host := Host} when Host =/= "" ->
            case string:lowercase(Scheme) of
                "http" -> {ok, http};
                "https" -> {ok, https};
                _ -> error
            end;
        _ ->
            error
    end.

-spec receive_loop(reference(), map(), map()) -> {done, binary()} | {redirect, string()}.
receive_loop(ReqId, #{fd := Fd, ctx := Ctx, size := Size} = State, Opts) ->
    CallerRef = maps:get(caller_ref, Opts),
    Max = maps:get(max_bytes, Opts),
    receive
        {http, {ReqId, stream_start, Headers, Pid}} ->
            case content_length(Headers) of
                N when is_integer(N), N > Max -> fail({too_large, Max});
                _ -> ok
            end,
            ok = httpc:stream_next(Pid),
            receive_loop(ReqId, State#{pid => Pid}, Opts);
        {http, {ReqId, stream, Bin}} ->
            NewSize = Size + byte_size(Bin),
            NewSize =< Max orelse fail({too_large, Max}),
            write(Fd, Bin, maps:get(file, Opts)),
            case State of
                #{pid := Pid} -> ok = httpc:stream_next(Pid);
                _ -> ok
            end,
            receive_loop(ReqId, State#{ctx := crypto:hash_update(Ctx, Bin), size := NewSize},
                         Opts);
        {http, {ReqId, stream_end, _Headers}} ->
            {done, hex(crypto:hash_final(Ctx))};
        {http, {ReqId, {{_, 200, _}, _Headers, Body}}} when is_binary(Body) ->
            %% A whole answer instead of a stream (an empty body, say).
            byte_size(Body) =< Max orelse fail({too_large, Max}),
            write(Fd, Body, maps:get(file, Opts)),
            {done, hex(crypto:hash_final(crypto:hash_update(Ctx, Body)))};
        {http, {ReqId, {{_, Code, _}, Headers, _Body}}} when Code >= 300, Code < 400 ->
            case lists:member(Code, [301, 302, 303, 307, 308])
                andalso proplists:get_value("location", Headers) of
                Location when is_list(Location), Location =/= "" -> {redirect, Location};
                _ -> fail({http_status, Code})
            end;
        {http, {ReqId, {{_, Code, _}, _Headers, _Body}}} ->
            fail({http_status, Code});
        {http, {ReqId, {error, Why}}} ->
            fail({download_failed, Why});
        {'DOWN', CallerRef, process, _, _} ->
            fail({download_failed, caller_down})
    after remaining(Opts) ->
        fail({download_failed, timeout})
    end.

-spec content_length([{string(), string()}]) -> non_neg_integer() | undefined.
content_length(Headers) ->
    case proplists:get_value("content-length", Headers) of
        undefined -> undefined;
        V -> try list_to_integer(string:trim(V)) catch _:_ -> undefined end
    end.

-spec write(file:io_device(), binary(), file:filename()) -> ok.
write(Fd, Bin, Path) ->
    case file:write(Fd, Bin) of
        ok -> ok;
        {error, Why} -> fail({file_error, write, Path, Why})
    end.

%% Lowercase: binary:encode_hex/2 needs OTP 26.
-spec hex(binary()) -> binary().
hex(Bin) ->
    string:lowercase(binary:encode_hex(Bin)).
