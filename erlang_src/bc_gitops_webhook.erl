%%% @doc Webhook receivers: a push to the tracked branch starts a reconcile
%%% at once, instead of at the next poll.
%%%
%%% <ul>
%%% <li>`github': `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw
%%%     body with webhook_secret>'. A `push' whose `ref' is
%%%     `refs/heads/<branch>' (or `refs/tags/<branch>', when a tag is
%%%     tracked) answers 202 and triggers; a `ping', another event or
%%%     another ref answers 200 and triggers nothing. The payload may be
%%%     JSON or GitHub's form encoding (`payload=<JSON>').</li>
%%% <li>`gitlab': `X-Gitlab-Token' equal to webhook_secret; a `Push Hook'
%%%     (or `Tag Push Hook') with the same `ref' rule.</li>
%%% <li>`generic': the same signature as GitHub's; always triggers.</li>
%%% </ul>
%%% Secrets and signatures are compared in constant time. A bad or missing
%%% signature (or no webhook_secret configured) is 401 and triggers
%%% nothing; a push that is not JSON is 400. A trigger is the
%%% reconciler's own coalescing trigger (a burst of pushes gives one
%%% running reconcile and one follow-up); in cluster mode it asks the
%%% coordinator to read git. Each hook emits `[bc_gitops, webhook,
%%% received]' with `latency' (native units, from the request's last byte
%%% to the trigger sent) and `source', `result' (`triggered', `ignored',
%%% `unauthorized', `bad_request' or `too_large') and `status' (the HTTP
%%% status).
-module(bc_gitops_webhook).

-export([handle/3, refused/2, same/2, signature/2]).

-export_type([source/0, result/0]).

-type source() :: github | gitlab | generic.
-type result() :: triggered | ignored | unauthorized | bad_request | too_large.

%% @doc Answers a webhook of `Source'.
-spec handle(source(), bc_gitops_http_conn:request(), bc_gitops_http:conn_options()) ->
    bc_gitops_http_conn:response().
handle(Source, #{headers := Headers, body := Body, received_at := At}, Opts) ->
    {Result, Status, Reply} = decide(Source, Headers, Body, Opts),
    emit(Source, Result, Status, erlang:monotonic_time() - At),
    bc_gitops_http_router:json(Status, Reply).

%% @doc Counts a webhook that could not be read whole.
-spec refused(source(), too_large | bad_request) -> ok.
refused(Source, Result) ->
    emit(Source, Result, case Result of too_large -> 413; bad_request -> 400 end, 0).

%% @doc Whether two secrets are equal, in a time that depends on neither.
-spec same(binary(), binary()) -> boolean().
same(A, B) ->
    crypto:hash_equals(crypto:hash(sha256, A), crypto:hash(sha256, B)).

%% @doc The lowercase hex HMAC-SHA256 of `Body' with `Secret' (as in
%% `X-Hub-Signature-256' and `X-BC-Gitops-Signature', after `sha256=').
-spec signature(binary(), iodata()) -> binary().
signature(Secret, Body) ->
    string:lowercase(binary:encode_hex(crypto:mac(hmac, sha256, Secret, Body))).

-spec emit(source(), result(), 100..599, integer()) -> ok.
emit(Source, Result, Status, Latency) ->
    bc_gitops_telemetry:execute([bc_gitops, webhook, received], #{latency => Latency},
                                #{source => Source, result => Result, status => Status}).

-spec decide(source(), #{binary() => binary()}, binary(), bc_gitops_http:conn_options()) ->
    {result(), 100..599, map()}.
decide(Source, Headers, Body, Opts) ->
    case bc_gitops_redact:get(webhook_secret) of
        undefined ->
            refuse(unauthorized, 401, <<"no webhook_secret is configured: webhooks are off">>);
        Secret ->
            case verified(Source, Headers, Body, Secret) of
                true -> event(Source, Headers, Body, Opts);
                false -> refuse(unauthorized, 401, <<"bad or missing signature">>)
            end
    end.

-spec verified(source(), #{binary() => binary()}, binary(), binary()) -> boolean().
verified(gitlab, #{<<"x-gitlab-token">> := Token}, _Body, Secret) ->
    same(Token, Secret);
verified(gitlab, _Headers, _Body, _Secret) ->
    false;
verified(_Signed, #{<<"x-hub-signature-256">> := <<"sha256=", Hex/binary>>}, Body, Secret) ->
    same(string:lowercase(string:trim(Hex)), signature(Secret, Body));
verified(_Signed, _Headers, _Body, _Secret) ->
    false.

-spec event(source(), #{binary() => binary()}, binary(), bc_gitops_http:conn_options()) ->
    {result(), 100..599, map()}.
event(github, Headers, Body, Opts) ->
    case maps:get(<<"x-github-event">>, Headers, <<>>) of
        <<"push">> -> push(payload(Headers, Body), Opts);
        <<"ping">> -> ignored(<<"ping">>);
        Other -> ignored([<<"a ">>, Other, <<" event is not a push">>])
    end;
event(gitlab, Headers, Body, Opts) ->
    case maps:get(<<"x-gitlab-event">>, Headers, <<>>) of
        Push when Push =:= <<"Push Hook">>; Push =:= <<"Tag Push Hook">> ->
            push(payload(Headers, Body), Opts);
        Other ->
            ignored([<<"a ">>, Other, <<" event is not a push">>])
    end;
event(generic, _Headers, _Body, Opts) ->
    trigger(Opts).

%% GitHub can send its payload form-encoded, as `payload=<JSON>'.
-spec payload(#{binary() => binary()}, binary()) -> {ok, term()} | {error, term()}.
payload(#{<<"content-type">> := <<"application/x-www-form-urlencoded", _/binary>>}, Body) ->
    case uri_string:dissect_query(Body) of
        Pairs when is_list(Pairs) ->
            case lists:keyfind(<<"payload">>, 1, Pairs) of
                {_, Json} when is_binary(Json) -> bc_gitops_json:decode(Json);
                _ -> {error, no_payload}
            end;
        _ ->
            {error, no_payload}
    end;
payload(_Headers, Body) ->
    bc_gitops_json:decode(Body).

-spec push({ok, term()} | {error, term()}, bc_gitops_http:conn_options()) ->
    {result(), 100..599, map()}.
push({ok, #{<<"ref">> := Ref}}, #{branch := Branch} = Opts) when is_binary(Ref) ->
    case tracked(Ref, Branch) of
        true -> trigger(Opts);
        false -> ignored([<<"ref ">>, Ref, <<" is not the tracked branch ">>, Branch])
    end;
push({ok, _}, _Opts) ->
    refuse(bad_request, 400, <<"a push payload has a \"ref\" string">>);
push({error, {json, Line, Message}}, _Opts) ->
    {bad_request, 400, #{error => bad_json, line => Line,
                         message => <<"the body is not JSON: ", Message/binary>>}};
push({error, no_payload}, _Opts) ->
    refuse(bad_request, 400, <<"a form-encoded hook carries a payload field">>).

-spec tracked(binary(), binary()) -> boolean().
tracked(<<"refs/heads/", Branch/binary>>, Branch) -> true;
tracked(<<"refs/tags/", Branch/binary>>, Branch) -> true;
tracked(_Ref, _Branch) -> false.

-spec trigger(bc_gitops_http:conn_options()) -> {result(), 100..599, map()}.
trigger(#{cluster := true}) ->
    case bc_gitops_cluster:coordinator() of
        {ok, Coordinator} ->
            gen_server:cast(Coordinator, refresh),
            {triggered, 202, #{result => triggered}};
        {error, Why} ->
            {ignored, 503, #{error => Why, message => <<"no coordinator to tell">>}}
    end;
trigger(#{cluster := false}) ->
    case bc_gitops_reconciler:trigger() of
        ok -> {triggered, 202, #{result => triggered}};
        suspended -> ignored(<<"reconciles are suspended">>);
        not_configured -> ignored(<<"no repo_url is configured">>);
        {error, not_running} -> {ignored, 503, #{error => not_running,
                                                 message => <<"the reconciler is not running">>}}
    end.

-spec ignored(iodata()) -> {ignored, 200, map()}.
ignored(Why) ->
    {ignored, 200, #{result => ignored, reason => iolist_to_binary(Why)}}.

-spec refuse(result(), 400..499, binary()) -> {result(), 400..499, map()}.
refuse(Result, Status, Message) ->
    {Result, Status, #{error => Result, message => Message}}.
