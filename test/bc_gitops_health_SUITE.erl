%%% Health checks against real endpoints on loopback (an inets httpd, a TCP
%%% listener, a custom module), alone and through the reconciler.
-module(bc_gitops_health_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([http_check/1, tcp_check/1, custom_check/1, check_event/1, status_shows_health/1]).
-export([check/1]).

all() -> [http_check, tcp_check, custom_check, check_event, status_shows_health].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(inets),
    Dir = bc_gitops_test_util:tmp_dir("ct_health"),
    Docs = filename:join(Dir, "docs"),
    bc_gitops_test_util:write_file(filename:join(Docs, "health"), "ok"),
    {ok, Httpd} = inets:start(httpd, [{port, 0}, {server_name, "localhost"},
                                      {server_root, Dir}, {document_root, Docs},
                                      {bind_address, {127, 0, 0, 1}},
                                      {modules, [mod_get]}]),
    [{port, Port}] = httpd:info(Httpd, [port]),
    [{dir, Dir}, {httpd, Httpd}, {http_port, Port} | Config].

end_per_suite(Config) ->
    ok = inets:stop(httpd, ?config(httpd, Config)),
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%% The custom check of these tests: what persistent_term says.
check(_App) ->
    case persistent_term:get({?MODULE, answer}, ok) of
        sleep -> timer:sleep(infinity);
        crash -> erlang:error(boom);
        Answer -> Answer
    end.

http_check(Config) ->
    Port = ?config(http_port, Config),
    ?assertEqual(healthy, bc_gitops_health:check(a, http(Port, <<"/health">>))),
    ?assertEqual({unhealthy, {http_status, 404}},
                 bc_gitops_health:check(a, http(Port, <<"/missing">>))),
    ?assertMatch({unhealthy, _}, bc_gitops_health:check(a, http(closed_port(), <<"/">>))),
    %% A proxy an app set on httpc's default profile is not the checks'.
    ok = httpc:set_options([{proxy, {{"127.0.0.1", closed_port()}, []}}]),
    try
        ?assertMatch({error, _}, httpc:request("http://127.0.0.1:" ++ integer_to_list(Port) ++ "/health")),
        ?assertEqual(healthy, bc_gitops_health:check(a, http(Port, <<"/health">>)))
    after
        %% A fresh default profile has no proxy (set_options cannot unset it).
        ok = inets:stop(httpc, default),
        {ok, _} = inets:start(httpc, [{profile, default}])
    end.

tcp_check(Config) ->
    ?assertEqual(healthy, bc_gitops_health:check(a, #health_spec{type = tcp,
                                                                  port = ?config(http_port, Config)})),
    ?assertEqual({unhealthy, econnrefused},
                 bc_gitops_health:check(a, #health_spec{type = tcp, port = closed_port()})).

custom_check(_Config) ->
    Spec = #health_spec{type = custom, module = ?MODULE, timeout = 300},
    Answers = [{ok, healthy}, {{error, down}, {unhealthy, down}},
               {weird, {unhealthy, {bad_return, weird}}}, {sleep, {unhealthy, timeout}}],
    [begin
         persistent_term:put({?MODULE, answer}, Answer),
         ?assertEqual(Expected, bc_gitops_health:check(a, Spec))
     end || {Answer, Expected} <- Answers],
    persistent_term:put({?MODULE, answer}, crash),
    ?assertMatch({unhealthy, {crashed, {boom, _}}}, bc_gitops_health:check(a, Spec)),
    persistent_term:put({?MODULE, answer}, ok).

check_event(Config) ->
    Self = self(),
    ok = telemetry:attach(<<"health">>, [bc_gitops, health, check],
                          fun(_, M, Meta, _) -> Self ! {health, M, Meta} end, none),
    try
        healthy = bc_gitops_health:check(web, http(?config(http_port, Config), <<"/health">>)),
        receive
            {health, #{latency := L}, #{app := web, type := http, result := healthy}} ->
                ?assert(is_integer(L) andalso L > 0)
        after 1000 -> ct:fail(no_event)
        end
    after
        telemetry:detach(<<"health">>)
    end.

%% An app with a custom check: healthy in status and get_app_status while
%% the check passes; degraded, with healthy_count 0, once it fails.
status_shows_health(Config) ->
    Dir = ?config(dir, Config),
    Origin = filename:join(Dir, "origin"),
    ok = bc_gitops_test_util:init_repo(Origin),
    bc_gitops_test_util:write_file(
      filename:join([Origin, "apps", "svc", "app.config"]),
      ["#{name => svc, version => <<\"1\">>, source => #{type => hex},\n"
       "  health => #{type => custom, module => ", atom_to_list(?MODULE), ", interval => 100}}.\n"]),
    _ = bc_gitops_test_util:commit(Origin, "svc"),
    persistent_term:put({?MODULE, answer}, ok),
    ok = bc_gitops_test_runtime:start(),
    {ok, _} = application:ensure_all_started(bc_gitops),
    try
        {ok, _} = bc_gitops:start_reconciler(#{repo_url => Origin,
                                               local_path => filename:join(Dir, "state"),
                                               runtime_module => bc_gitops_test_runtime,
                                               reconcile_interval => 3600000}),
        ok = bc_gitops:reconcile(),
        ok = wait_for(fun() -> status_is(synced, 1) end),
        ?assertMatch({ok, #app_state{health = healthy}}, bc_gitops:get_app_status(svc)),
        persistent_term:put({?MODULE, answer}, {error, broken}),
        ok = wait_for(fun() -> status_is(degraded, 0) end),
        ?assertMatch({ok, #app_state{health = unhealthy}}, bc_gitops:get_app_status(svc))
    after
        ok = application:stop(bc_gitops),
        persistent_term:put({?MODULE, answer}, ok)
    end.

status_is(Status, Healthy) ->
    case bc_gitops:status() of
        {ok, #{status := Status, healthy_count := Healthy}} -> true;
        _ -> false
    end.

wait_for(Fun) -> wait_for(Fun, 100).
wait_for(_Fun, 0) -> ct:fail(condition_not_met);
wait_for(Fun, N) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(50), wait_for(Fun, N - 1)
    end.

%% A check's first GET starts httpc and its resolver and loads their code;
%% on a busy 2-core CI machine that took over 2 s, so the bound is wide.
%% What a check that times out reports is custom_check's business.
http(Port, Path) -> #health_spec{type = http, port = Port, path = Path, timeout = 15000}.

%% A port nothing listens on: bound to a socket that is closed right away.
closed_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(S),
    ok = gen_tcp:close(S),
    Port.
