%%% @doc Which endpoint answers a request, and who may ask.
%%%
%%% <ul>
%%% <li>`POST /hooks/github', `/hooks/gitlab', `/hooks/generic': signed
%%%     webhooks ({@link bc_gitops_webhook}); no token needed, their
%%%     signature is the authentication;</li>
%%% <li>`GET /': the status page ({@link bc_gitops_status_page});</li>
%%% <li>`GET /api/status', `/api/plan', `/api/apps/<app>': JSON
%%%     ({@link bc_gitops_http_api});</li>
%%% <li>`GET /metrics': Prometheus' text format.</li>
%%% </ul>
%%% When the listener has a token, every endpoint but the webhooks wants
%%% `Authorization: Bearer <token>' (compared in constant time), else 401.
%%% An unknown path is 404, a known one with another method 405 (with
%%% `Allow'); errors are JSON: `{"error": Code, "message": Text}'.
-module(bc_gitops_http_router).

-export([handle/2, refuse/2, error_response/3, json/2]).

-type response() :: bc_gitops_http_conn:response().

%% @doc Answers a request that was read whole.
-spec handle(bc_gitops_http_conn:request(), bc_gitops_http:conn_options()) -> response().
handle(#{method := Method, path := Path} = Req, Opts) ->
    Route = route(Path),
    Allowed = allowed(Route),
    case {Route, lists:member(Method, Allowed)} of
        {none, _} ->
            error_response(404, not_found, <<"no such endpoint">>);
        {_, false} ->
            {Status, Headers, Body} = error_response(405, method_not_allowed,
                                                     [Method, " is not allowed here"]),
            {Status, [{<<"allow">>, lists:join(", ", Allowed)} | Headers], Body};
        {{hook, Source}, true} ->
            bc_gitops_webhook:handle(Source, Req, Opts);
        {_, true} ->
            case authorized(Req, Opts) of
                true ->
                    endpoint(Route);
                false ->
                    {Status, Headers, Body} = error_response(401, unauthorized,
                                                             <<"a valid bearer token is needed">>),
                    {Status, [{<<"www-authenticate">>, <<"Bearer realm=\"bc_gitops\"">>} | Headers],
                     Body}
            end
    end.

%% @doc Answers a request that could not be read whole (`Status' says
%% why); a webhook's is counted as such.
-spec refuse(400..499, map()) -> response().
refuse(Status, Partial) ->
    {Code, Text} = refusal(Status),
    case route(maps:get(path, Partial, <<>>)) of
        {hook, Source} when Status =:= 413 -> bc_gitops_webhook:refused(Source, too_large);
        {hook, Source} -> bc_gitops_webhook:refused(Source, bad_request);
        _ -> ok
    end,
    error_response(Status, Code, Text).

-spec refusal(400..499) -> {atom(), binary()}.
refusal(408) -> {request_timeout, <<"the request did not arrive in time">>};
refusal(411) -> {length_required, <<"a Content-Length is needed (no chunked bodies)">>};
refusal(413) -> {too_large, <<"the body is larger than 1 MiB">>};
refusal(414) -> {uri_too_long, <<"the request line is longer than 8 KiB">>};
refusal(431) -> {headers_too_large, <<"more than 64 headers, 16 KiB of them, or a line over 8 KiB">>};
refusal(_) -> {bad_request, <<"the request could not be read as HTTP/1.1">>}.

%% @doc A JSON error answer.
-spec error_response(400..599, atom(), iodata()) -> response().
error_response(Status, Code, Text) ->
    json(Status, #{error => Code, message => iolist_to_binary(Text)}).

%% @doc A JSON answer.
-spec json(100..599, term()) -> response().
json(Status, Term) ->
    {Status, [{<<"content-type">>, <<"application/json">>}], bc_gitops_json:encode(Term)}.

-type route() :: {hook, bc_gitops_webhook:source()} | page | status | plan | {app, binary()}
               | metrics | none.

-spec route(binary()) -> route().
route(<<"/hooks/github">>) -> {hook, github};
route(<<"/hooks/gitlab">>) -> {hook, gitlab};
route(<<"/hooks/generic">>) -> {hook, generic};
route(<<"/">>) -> page;
route(<<"/api/status">>) -> status;
route(<<"/api/plan">>) -> plan;
route(<<"/api/apps/", App/binary>>) when App =/= <<>> ->
    try uri_string:percent_decode(App) of
        Name when is_binary(Name) -> {app, Name};
        _ -> none
    catch
        throw:{error, _, _} -> none
    end;
route(<<"/metrics">>) -> metrics;
route(_) -> none.

-spec allowed(route()) -> [binary()].
allowed(none) -> [];
allowed({hook, _}) -> [<<"POST">>];
allowed(_) -> [<<"GET">>, <<"HEAD">>].

-spec endpoint(route()) -> response().
endpoint(page) ->
    {200, [{<<"content-type">>, <<"text/html; charset=utf-8">>},
           {<<"content-security-policy">>,
            <<"default-src 'none'; style-src 'unsafe-inline'; img-src data:">>}],
     bc_gitops_status_page:render(bc_gitops_http_api:facts())};
endpoint(status) ->
    bc_gitops_http_api:status();
endpoint(plan) ->
    bc_gitops_http_api:plan();
endpoint({app, Name}) ->
    bc_gitops_http_api:app(Name);
endpoint(metrics) ->
    {200, [{<<"content-type">>, <<"text/plain; version=0.0.4; charset=utf-8">>}],
     bc_gitops_http_api:metrics()}.

%% Without a token, everyone on the listener's address may read.
-spec authorized(bc_gitops_http_conn:request(), bc_gitops_http:conn_options()) -> boolean().
authorized(_Req, #{auth := false}) ->
    true;
authorized(#{headers := Headers}, #{auth := true}) ->
    case {maps:get(<<"authorization">>, Headers, none), bc_gitops_redact:get(token)} of
        {<<"Bearer ", Given/binary>>, Token} when is_binary(Token) ->
            bc_gitops_webhook:same(string:trim(Given), Token);
        _ ->
            false
    end.
