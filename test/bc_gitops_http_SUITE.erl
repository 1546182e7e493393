%%% The HTTP face: options, signed webhooks that trigger reconciles, the
%%% JSON API, /metrics checked by promtool, the status page in a real
%%% browser (Debian's chromium, headless) on a node that runs apps built
%%% from git, status()'s in_progress, and bad input of every kind.
-module(bc_gitops_http_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([options_are_checked/1, token_guards_all_but_hooks/1, github_hooks/1, gitlab_and_generic_hooks/1,
         burst_of_hooks_is_coalesced/1, json_api/1, in_progress_phases/1,
         in_progress_of_a_custom_runtime/1, metrics_pass_promtool/1, status_page_in_browser/1,
         bad_requests_get_clear_answers/1, stalling_client_is_cut/1,
         random_requests_leave_reconciler_alone/1, secrets_never_shown/1]).

-import(bc_gitops_test_util, [commit/2, write_file/2, wait_reconciled/1]).
-import(bc_gitops_http_client, [request/4, request/5, json/3, hook/4]).

-define(SECRET, "hook-secret-0123456789").
-define(TOKEN, "bearer-token-9876543210").

all() ->
    [options_are_checked, token_guards_all_but_hooks, github_hooks, gitlab_and_generic_hooks,
     burst_of_hooks_is_coalesced, json_api, in_progress_phases, in_progress_of_a_custom_runtime,
     metrics_pass_promtool, status_page_in_browser, bad_requests_get_clear_answers,
     stalling_client_is_cut, random_requests_leave_reconciler_alone, secrets_never_shown].

init_per_suite(Config) ->
    ok = bc_gitops_test_runtime:start(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_http"),
    Gitops = bc_gitops_test_apps:gitops(Dir),
    ok = bc_gitops_test_runtime:start(),
    ok = bc_gitops_test_health:reset(),
    ok = bc_gitops_test_logs:capture(),
    {ok, _} = application:ensure_all_started(bc_gitops),
    [{dir, Dir}, {gitops, Gitops} | Config].

end_per_testcase(_Case, Config) ->
    ok = bc_gitops_test_logs:stop(),
    _ = [telemetry:detach(Id) || Id <- [<<"http_suite">>]],
    {ok, Apps} = bc_gitops_runtime_default:get_current_state(),
    _ = [bc_gitops_runtime_default:remove(A) || A <- maps:keys(Apps)],
    ok = application:stop(bc_gitops),
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%%% Cases

%% Each bad value of http, webhook_secret and notify is refused with the
%% option named, and never with the secret in the message.
options_are_checked(Config) ->
    Bad = fun(Extra) ->
                  {error, {bad_config, Option, Why}} =
                      bc_gitops:start_reconciler(base(Config, Extra)),
                  ?assertEqual(nomatch, binary:match(Why, [<<"s3cr">>, <<"pw-x">>])),
                  {Option, Why}
          end,
    ?assertMatch({http, <<"a listener on 0.0.0.0 (not loopback) needs a token">>},
                 Bad(#{http => #{port => 0, ip => "0.0.0.0"}})),
    ?assertMatch({http, <<"token must be a string of at least 8 bytes">>},
                 Bad(#{http => #{port => 0, ip => "0.0.0.0", token => "s3cr"}})),
    ?assertMatch({http, <<"port must be", _/binary>>}, Bad(#{http => #{port => 70000}})),
    ?assertMatch({http, <<"port must be", _/binary>>}, Bad(#{http => #{ip => "127.0.0.1"}})),
    ?assertMatch({http, <<"unknown keys [tokn]">>}, Bad(#{http => #{port => 0, tokn => "x"}})),
    ?assertMatch({http, <<"ip must be", _/binary>>}, Bad(#{http => #{port => 0, ip => "localhost"}})),
    ?assertMatch({http, <<"must be false or", _/binary>>}, Bad(#{http => 8080})),
    ?assertMatch({webhook_secret, <<"must be at least 8 bytes">>}, Bad(#{webhook_secret => "s3cr"})),
    ?assertMatch({notify, <<"entry 1: url must be an http:// or https:// URL">>},
                 Bad(#{notify => [#{url => "ftp://u:pw-x@host/"}]})),
    ?assertMatch({notify, <<"entry 2: unknown event nope", _/binary>>},
                 Bad(#{notify => [#{url => "http://h/"}, #{url => "http://h/", events => [nope]}]})),
    ?assertMatch({notify, <<"entry 1: unknown keys [extra]">>},
                 Bad(#{notify => [#{url => "http://h/", extra => 1}]})),
    ?assertMatch({notify, <<"must be a list", _/binary>>}, Bad(#{notify => #{url => "http://h/"}})),
    %% Nothing half-started: no listener.
    ?assertEqual({error, not_running}, bc_gitops:http_port()),
    %% A port already taken: the reconciler does not start either.
    {ok, Taken} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, TakenPort} = inet:port(Taken),
    ?assertMatch({error, {http_listen_failed, _, eaddrinuse}},
                 bc_gitops:start_reconciler(base(Config, #{http => #{port => TakenPort}}))),
    ?assertEqual(undefined, whereis(bc_gitops_reconciler)),
    ok = gen_tcp:close(Taken),
    %% Off by default.
    {ok, _} = bc_gitops:start_reconciler(base(Config, #{})),
    ?assertEqual({error, not_running}, bc_gitops:http_port()).

%% On 0.0.0.0 with a token: every endpoint but the hooks wants it.
token_guards_all_but_hooks(Config) ->
    {ok, _} = bc_gitops:start_reconciler(
                base(Config, #{http => #{port => 0, ip => "0.0.0.0", token => ?TOKEN},
                               webhook_secret => ?SECRET, runtime_module => bc_gitops_test_runtime})),
    wait_reconciled(20000),
    Port = port(),
    Auth = [{"authorization", "Bearer " ++ ?TOKEN}],
    [begin
         {401, #{<<"www-authenticate">> := _}, _} = request(Port, "GET", Path, []),
         {401, _, _} = request(Port, "GET", Path, [{"authorization", "Bearer wrong-token-123"}]),
         {401, _, _} = request(Port, "GET", Path, [{"authorization", "Basic " ++ ?TOKEN}]),
         {200, _, _} = request(Port, "GET", Path, Auth)
     end || Path <- ["/", "/api/status", "/api/plan", "/metrics"]],
    {404, _, _} = request(Port, "GET", "/api/apps/none", Auth),
    %% The hook needs its signature only.
    {200, _, _} = hook(Port, {github, "ping", ?SECRET}, <<"{}">>, []),
    {401, _, _} = hook(Port, {github, "ping", "another-secret"}, <<"{}">>, Auth).

%% GitHub: ping and pushes to other refs answer 200 and trigger nothing;
%% a push to the branch answers 202 and starts a reconcile that applies
%% the new commit; a bad or missing signature is 401.
github_hooks(Config) ->
    Gitops = ?config(gitops, Config),
    start(Config, #{runtime_module => bc_gitops_test_runtime}),
    Port = port(),
    ok = watch([[bc_gitops, reconcile, start], [bc_gitops, webhook, received]]),
    Push = fun(Ref) -> iolist_to_binary(["{\"ref\": \"", Ref, "\", \"after\": \"abc\"}"]) end,

    ?assertMatch({200, _, _}, hook(Port, {github, "ping", ?SECRET}, <<"{\"zen\": \"hi\"}">>, [])),
    {200, _, Other} = hook(Port, {github, "push", ?SECRET}, Push("refs/heads/other"), []),
    ?assertMatch({ok, #{<<"result">> := <<"ignored">>,
                        <<"reason">> := <<"ref refs/heads/other is not the tracked branch main">>}},
                 bc_gitops_json:decode(Other)),
    ?assertMatch({200, _, _}, hook(Port, {github, "issues", ?SECRET}, Push("refs/heads/main"), [])),
    ?assertMatch({401, _, _}, hook(Port, {github, "push", "not-the-secret"}, Push("refs/heads/main"), [])),
    ?assertMatch({401, _, _}, request(Port, "POST", "/hooks/github", [{"x-github-event", "push"}],
                                      Push("refs/heads/main"))),
    ?assertMatch({401, _, _}, request(Port, "POST", "/hooks/github",
                                      [{"x-github-event", "push"}, {"x-hub-signature-256", "sha256=00"}],
                                      Push("refs/heads/main"))),
    ?assertEqual([], starts(300)),

    bc_gitops_test_util:write_spec(Gitops, "gh_app", bc_gitops_test_util:minimal_spec("gh_app")),
    Commit = commit(Gitops, "gh_app"),
    {202, _, Accepted} = hook(Port, {github, "push", ?SECRET}, Push("refs/heads/main"), []),
    ?assertEqual({ok, #{<<"result">> => <<"triggered">>}}, bc_gitops_json:decode(Accepted)),
    ?assertMatch([_], starts(5000)),
    wait_reconciled(20000),
    ?assertMatch({ok, #{last_commit := Commit, app_count := 1}}, bc_gitops:status()),
    ?assertEqual([{deploy, gh_app, <<"1.0.0">>}], bc_gitops_test_runtime:calls()),

    %% Form-encoded, as GitHub can send it.
    Form = iolist_to_binary(["payload=", uri_string:quote(Push("refs/heads/main"))]),
    ?assertMatch({202, _, _},
                 request(Port, "POST", "/hooks/github",
                         [{"content-type", "application/x-www-form-urlencoded"},
                          {"x-github-event", "push"},
                          {"x-hub-signature-256", bc_gitops_http_client:sign(?SECRET, Form)}], Form)),
    ?assertMatch([_], starts(5000)),
    %% Each hook told telemetry its source, result and latency.
    Results = [{S, R} || {_, [bc_gitops, webhook, received], #{latency := L},
                          #{source := S, result := R}} <- events(), is_integer(L), L >= 0],
    ?assertEqual([{github, ignored}, {github, ignored}, {github, ignored}, {github, unauthorized},
                  {github, unauthorized}, {github, unauthorized}, {github, triggered},
                  {github, triggered}], Results).

%% GitLab's token and push semantics; the generic hook always triggers;
%% a suspended node and a node without webhook_secret trigger nothing.
gitlab_and_generic_hooks(Config) ->
    start(Config, #{runtime_module => bc_gitops_test_runtime}),
    Port = port(),
    ok = watch([[bc_gitops, reconcile, start]]),
    Push = <<"{\"object_kind\": \"push\", \"ref\": \"refs/heads/main\"}">>,
    ?assertMatch({401, _, _}, hook(Port, {gitlab, "Push Hook", "wrong-secret-xx"}, Push, [])),
    ?assertMatch({401, _, _}, request(Port, "POST", "/hooks/gitlab", [{"x-gitlab-event", "Push Hook"}],
                                      Push)),
    ?assertMatch({200, _, _}, hook(Port, {gitlab, "Merge Request Hook", ?SECRET}, Push, [])),
    ?assertMatch({200, _, _}, hook(Port, {gitlab, "Push Hook", ?SECRET},
                                   <<"{\"ref\": \"refs/heads/dev\"}">>, [])),
    ?assertEqual([], starts(300)),
    ?assertMatch({202, _, _}, hook(Port, {gitlab, "Push Hook", ?SECRET}, Push, [])),
    ?assertMatch([_], starts(5000)),
    wait_reconciled(20000),
    ?assertMatch({202, _, _}, hook(Port, {generic, none, ?SECRET}, <<"anything at all">>, [])),
    ?assertMatch([_], starts(5000)),
    wait_reconciled(20000),
    ?assertMatch({401, _, _}, request(Port, "POST", "/hooks/generic", [], <<"x">>)),

    ok = bc_gitops:suspend(),
    {200, _, Suspended} = hook(Port, {generic, none, ?SECRET}, <<>>, []),
    ?assertMatch({ok, #{<<"reason">> := <<"reconciles are suspended">>}},
                 bc_gitops_json:decode(Suspended)),
    ?assertEqual([], starts(300)),

    ok = bc_gitops:stop_reconciler(),
    {ok, _} = bc_gitops:start_reconciler(maps:remove(webhook_secret, base(Config, #{http => #{port => 0}}))),
    wait_reconciled(20000),
    _ = starts(0),
    {401, _, Off} = hook(port(), {generic, none, ?SECRET}, <<>>, []),
    ?assertMatch({ok, #{<<"message">> := <<"no webhook_secret is configured", _/binary>>}},
                 bc_gitops_json:decode(Off)),
    ?assertEqual([], starts(300)).

%% 1,000 valid hooks while a slow reconcile runs: every one is answered
%% 202, and they give one running reconcile plus one follow-up.
burst_of_hooks_is_coalesced(Config) ->
    Gitops = ?config(gitops, Config),
    start(Config, #{runtime_module => bc_gitops_test_runtime}),
    Port = port(),
    bc_gitops_test_util:write_spec(Gitops, "slow", bc_gitops_test_util:minimal_spec("slow")),
    _ = commit(Gitops, "slow"),
    bc_gitops_test_runtime:set_delay(6000),
    ok = watch([[bc_gitops, reconcile, start], [bc_gitops, reconcile, stop]]),
    Body = <<"{\"ref\": \"refs/heads/main\"}">>,
    {202, _, _} = hook(Port, {github, "push", ?SECRET}, Body, []),
    T0 = erlang:monotonic_time(millisecond),
    Self = self(),
    Clients = [spawn_link(fun() ->
                                  Codes = [element(1, hook(Port, {github, "push", ?SECRET}, Body, []))
                                           || _ <- lists:seq(1, 50)],
                                  Self ! {codes, self(), Codes}
                          end) || _ <- lists:seq(1, 20)],
    Codes = lists:append([receive {codes, C, Cs} -> Cs end || C <- Clients]),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:pal("1,000 hooks answered in ~b ms", [Took]),
    ?assert(Took < 6000),
    ?assertEqual(lists:duplicate(1000, 202), Codes),
    bc_gitops_test_runtime:set_delay(0),
    wait_reconciled(30000),
    timer:sleep(500),
    wait_reconciled(30000),
    Seen = [E || {_, [bc_gitops, reconcile, E], _, _} <- events()],
    ?assertEqual([start, stop, start, stop], Seen),
    ?assertEqual([{deploy, slow, <<"1.0.0">>}], bc_gitops_test_runtime:calls()).

%% /api/status, /api/plan and /api/apps/<app> say what the Erlang API says.
json_api(Config) ->
    Gitops = ?config(gitops, Config),
    bc_gitops_test_util:write_spec(Gitops, "api_a", bc_gitops_test_util:minimal_spec("api_a")),
    bc_gitops_test_util:write_spec(Gitops, "api_b",
                                   "#{name => api_b, version => <<\"2.0.0\">>, source => #{type => hex},"
                                   " depends_on => [api_a]}.\n"),
    bc_gitops_test_util:write_spec(Gitops, "api_bad", "#{name => api_bad, version => 1}.\n"),
    Commit = commit(Gitops, "api"),
    bc_gitops_test_runtime:fail(api_a, true),
    start(Config, #{runtime_module => bc_gitops_test_runtime}),
    Port = port(),
    {ok, Status} = bc_gitops:status(),
    {200, Json} = json(Port, "/api/status", []),
    ?assertMatch(#{<<"status">> := <<"out_of_sync">>, <<"last_commit">> := Commit,
                   <<"app_count">> := 2, <<"healthy_count">> := 0, <<"branch">> := <<"main">>,
                   <<"suspended">> := false, <<"in_progress">> := [],
                   <<"waiting">> := [#{<<"app">> := <<"api_b">>,
                                       <<"reason">> := <<"{dependency_not_ready,api_a}">>}],
                   <<"app_errors">> := #{<<"api_a">> := #{<<"attempts">> := 1,
                                                          <<"reason">> := <<"{start_failed,api_a}">>}},
                   <<"spec_errors">> := [#{<<"app">> := <<"api_bad">>} | _]}, Json),
    ?assertEqual(lists:sort([atom_to_binary(K, utf8) || K <- maps:keys(Status)]),
                 lists:sort(maps:keys(Json))),

    {200, Plan} = json(Port, "/api/plan", []),
    ?assertMatch(#{<<"actions">> := [#{<<"action">> := <<"deploy">>, <<"app">> := <<"api_a">>},
                                     #{<<"action">> := <<"deploy">>, <<"app">> := <<"api_b">>,
                                       <<"version">> := <<"2.0.0">>}],
                   <<"blocked">> := []}, Plan),

    %% Fixed, with a spec that changes: applied at once, backoff or not.
    bc_gitops_test_runtime:fail(api_a, false),
    bc_gitops_test_util:write_spec(Gitops, "api_a",
                                   "#{name => api_a, version => <<\"1.0.1\">>, source => #{type => hex}}.\n"),
    _ = commit(Gitops, "api_a 1.0.1"),
    ?assertMatch({error, {out_of_sync, #{spec_errors := _}}}, bc_gitops:reconcile()),
    {200, App} = json(Port, "/api/apps/api_b", []),
    ?assertMatch(#{<<"app">> := <<"api_b">>,
                   <<"desired">> := #{<<"version">> := <<"2.0.0">>, <<"depends_on">> := [<<"api_a">>],
                                      <<"source">> := #{<<"type">> := <<"hex">>}},
                   <<"running">> := #{<<"version">> := <<"2.0.0">>, <<"status">> := <<"running">>,
                                      <<"health">> := <<"healthy">>},
                   <<"error">> := null, <<"waiting">> := null, <<"in_progress">> := []}, App),
    {200, Bad} = json(Port, "/api/apps/api_bad", []),
    ?assertMatch(#{<<"desired">> := null, <<"running">> := null,
                   <<"spec_errors">> := [<<"apps/api_bad/app.config:1: version", _/binary>> | _]}, Bad),
    %% Unknown: 404 with a JSON error, and no atom made of the name.
    ?assertMatch({404, #{<<"error">> := <<"not_found">>}}, json(Port, "/api/apps/no_such_app_xyz", [])),
    ?assertError(badarg, binary_to_existing_atom(<<"no_such_app_xyz">>, utf8)),
    ?assertMatch({404, _}, json(Port, "/api/apps/api_a%2F..", [])),
    %% HEAD: the headers of a GET, no body.
    {200, #{<<"content-length">> := Length}, <<>>} = request(Port, "HEAD", "/api/status", []),
    ?assert(binary_to_integer(Length) > 100).

%% A deploy from git with a 2 s build, a start that takes 600 ms, then a
%% health gate that waits: status() shows the app in fetching, building,
%% starting and health_wait, in that order, since when; nothing once it
%% is over. The long steps are logged with their time.
in_progress_phases(Config) ->
    Dir = ?config(dir, Config),
    Repo = bc_gitops_test_apps:app_repo(Dir, "ip_app", 2),
    bc_gitops_test_apps:plain_app(Repo, "ip_app", "-export([init/1]).\n"
                                  "start(_, _) -> timer:sleep(600), supervisor:start_link(ip_app_app, []).\n"
                                  "init([]) -> {ok, {#{}, []}}.\n"),
    _ = commit(Repo, "v1"),
    start(Config, #{health_grace => 1500, backoff_base => 3600000}),
    %% Its check is on a port nothing listens on: the gate waits it out.
    bc_gitops_test_apps:spec(?config(gitops, Config), "ip_app", "1.0.0", Repo,
                             ["health => #{type => tcp, port => ",
                              integer_to_list(bc_gitops_test_apps:free_port()),
                              ", interval => 100, timeout => 200}"]),
    Self = self(),
    _ = spawn_link(fun() -> Self ! {reconciled, bc_gitops:reconcile()} end),
    Seen = dedup(poll_progress(ip_app, [])),
    ct:pal("in_progress of ip_app: ~p", [Seen]),
    ?assertEqual([fetching, building, starting, health_wait], [P || #{phase := P} <- Seen]),
    ?assert(lists:all(fun(#{action := A}) -> A =:= deploy end, Seen)),
    Now = erlang:system_time(millisecond),
    ?assert(lists:all(fun(#{since := S}) -> S =< Now andalso S > Now - 60000 end, Seen)),
    [_, #{since := Building}, #{since := Starting}, #{since := HealthWait}] = Seen,
    ?assert(Starting - Building >= 2000),
    ?assert(HealthWait - Starting >= 600),
    receive {reconciled, R} -> ?assertMatch({error, {out_of_sync, _}}, R) after 60000 -> ct:fail(no_end) end,
    ?assertMatch({ok, #{in_progress := []}}, bc_gitops:status()),
    Logs = bc_gitops_test_logs:lines(),
    ?assertMatch([_], [L || L <- Logs, binary:match(L, <<"building ip_app 1.0.0: done in ">>) =/= nomatch]),
    ?assertMatch([_], [L || L <- Logs, binary:match(L, <<"fetching ip_app 1.0.0: done in ">>) =/= nomatch]).

%% A runtime that reports nothing still shows its actions: `starting' for
%% a deploy, `upgrading' for an upgrade.
in_progress_of_a_custom_runtime(Config) ->
    Gitops = ?config(gitops, Config),
    start(Config, #{runtime_module => bc_gitops_test_runtime}),
    bc_gitops_test_runtime:set_delay(1000),
    bc_gitops_test_util:write_spec(Gitops, "cr", bc_gitops_test_util:minimal_spec("cr")),
    _ = commit(Gitops, "cr 1"),
    Self = self(),
    _ = spawn_link(fun() -> Self ! {reconciled, bc_gitops:reconcile()} end),
    ?assertMatch([#{app := cr, action := deploy, phase := starting}], dedup(poll_progress(cr, []))),
    receive {reconciled, ok} -> ok after 20000 -> ct:fail(no_end) end,
    bc_gitops_test_util:write_spec(Gitops, "cr", "#{name => cr, version => <<\"2.0.0\">>, source => #{type => hex}}.\n"),
    _ = commit(Gitops, "cr 2"),
    _ = spawn_link(fun() -> Self ! {reconciled, bc_gitops:reconcile()} end),
    ?assertMatch([#{app := cr, action := upgrade, phase := upgrading}], dedup(poll_progress(cr, []))),
    receive {reconciled, ok} -> ok after 20000 -> ct:fail(no_end) end,
    ?assertMatch({ok, #{in_progress := []}}, bc_gitops:status()).

%% After real deploys, a hot upgrade, a rolled-back upgrade and hooks,
%% promtool accepts /metrics, and the values are what happened; all of it
%% counted with no telemetry module loaded.
metrics_pass_promtool(Config) ->
    ok = unload_telemetry(),
    try
        metrics(Config)
    after
        {module, telemetry} = code:ensure_loaded(telemetry)
    end.

metrics(Config) ->
    Gitops = ?config(gitops, Config),
    Repo = bc_gitops_test_apps:app_repo(?config(dir, Config), "mx_web"),
    Port = bc_gitops_test_apps:free_port(),
    Spec = fun(Vsn) ->
                   bc_gitops_test_apps:spec(Gitops, "mx_web", Vsn, Repo,
                                            ["env => #{port => ", integer_to_list(Port), "},\n",
                                             "  health => #{type => http, port => ", integer_to_list(Port),
                                             ", interval => 100, timeout => 1000}"])
           end,
    bc_gitops_test_apps:web_app(Repo, "mx_web", "1.0.0", "200 OK"),
    _ = commit(Repo, "v1"),
    Spec("1.0.0"),
    start(Config, #{health_grace => 1500, backoff_base => 3600000}),
    ?assertEqual({200, <<"1.0.0">>}, bc_gitops_test_apps:http_get(Port)),
    bc_gitops_test_apps:web_app(Repo, "mx_web", "2.0.0", "200 OK"),
    _ = commit(Repo, "v2"),
    Spec("2.0.0"),
    {202, _, _} = hook(port(), {github, "push", ?SECRET}, <<"{\"ref\": \"refs/heads/main\"}">>, []),
    ok = wait_until(fun() -> bc_gitops_test_apps:http_get(Port) =:= {200, <<"2.0.0">>} end, 200),
    wait_reconciled(20000),
    bc_gitops_test_apps:web_app(Repo, "mx_web", "3.0.0", "500 Internal Server Error"),
    _ = commit(Repo, "v3 answers 500"),
    Spec("3.0.0"),
    ?assertMatch({error, {out_of_sync, #{failed := [{mx_web, {rolled_back, _}}]}}}, bc_gitops:reconcile()),
    ?assertEqual({200, <<"2.0.0">>}, bc_gitops_test_apps:http_get(Port)),
    ok = wait_until(fun() -> healthy(mx_web) end, 50),
    {200, Headers, Text} = request(port(), "GET", "/metrics", []),
    ?assertEqual(<<"text/plain; version=0.0.4; charset=utf-8">>, maps:get(<<"content-type">>, Headers)),
    ct:pal("~s", [Text]),
    ?assertEqual({0, <<>>}, promtool(Text, ?config(priv_dir, Config))),
    V = fun(Series) -> value(Text, Series) end,
    %% v1 -> v2 hot, v2 -> v3 hot, then back to v2 (hot): 3; one rollback.
    ?assertEqual(3, V(<<"bc_gitops_upgrades_total{path=\"hot\"}">>)),
    ?assertEqual(1, V(<<"bc_gitops_upgrades_total{path=\"rolled_back\"}">>)),
    ?assertEqual(0, V(<<"bc_gitops_upgrades_total{path=\"restart\"}">>)),
    ?assertEqual(1, V(<<"bc_gitops_webhooks_total{source=\"github\",result=\"triggered\"}">>)),
    ?assertEqual(1, V(<<"bc_gitops_app_info{app=\"mx_web\",version=\"2.0.0\"}">>)),
    ?assertEqual(1, V(<<"bc_gitops_apps{status=\"running\",health=\"healthy\"}">>)),
    ?assertEqual(1, V(<<"bc_gitops_status{status=\"out_of_sync\"}">>)),
    Synced = V(<<"bc_gitops_reconciles_total{result=\"synced\"}">>),
    OutOfSync = V(<<"bc_gitops_reconciles_total{result=\"out_of_sync\"}">>),
    ?assert(Synced >= 2 andalso OutOfSync >= 1),
    ?assertEqual(Synced + OutOfSync, V(<<"bc_gitops_reconcile_duration_seconds_count">>)),
    ?assertEqual(Synced + OutOfSync, V(<<"bc_gitops_reconcile_duration_seconds_bucket{le=\"+Inf\"}">>)),
    ?assert(V(<<"bc_gitops_git_fetch_duration_seconds_count">>) >= 3),
    LastSuccess = V(<<"bc_gitops_last_success_timestamp_seconds">>),
    ?assert(abs(LastSuccess - erlang:system_time(second)) < 60).

%% The status page, as Debian's chromium renders it, on a node that runs
%% apps built from git: a healthy web app, one that fails to start, one
%% that waits for it, a broken spec, and a slow build under way.
status_page_in_browser(Config) ->
    Gitops = ?config(gitops, Config),
    Dir = ?config(dir, Config),
    WebPort = bc_gitops_test_apps:free_port(),
    Web = bc_gitops_test_apps:app_repo(Dir, "sp_web"),
    bc_gitops_test_apps:web_app(Web, "sp_web", "1.4.2", "200 OK"),
    _ = commit(Web, "v1.4.2"),
    Broken = bc_gitops_test_apps:app_repo(Dir, "sp_broken"),
    bc_gitops_test_apps:plain_app(Broken, "sp_broken", "start(_, _) -> {error, refuses_to_start}.\n"),
    _ = commit(Broken, "v1"),
    Front = bc_gitops_test_apps:app_repo(Dir, "sp_front"),
    bc_gitops_test_apps:plain_app(Front, "sp_front", "-export([init/1]).\n"
                                  "start(_, _) -> supervisor:start_link(sp_front_app, []).\n"
                                  "init([]) -> {ok, {#{}, []}}.\n"),
    _ = commit(Front, "v1"),
    bc_gitops_test_apps:spec(Gitops, "sp_web", "1.4.2", Web,
                             ["env => #{port => ", integer_to_list(WebPort), "},\n",
                              "  health => #{type => http, port => ", integer_to_list(WebPort),
                              ", interval => 500, timeout => 1000}"]),
    bc_gitops_test_apps:spec(Gitops, "sp_broken", "1.0.0", Broken, "env => #{}"),
    bc_gitops_test_apps:spec(Gitops, "sp_front", "1.0.0", Front, "depends_on => [sp_broken]"),
    write_file(filename:join([Gitops, "apps", "sp_typo", "app.config"]),
               "#{name => sp_typo, version => <<\"1.0.0\">>,\n  source => #{type => svn}}.\n"),
    _ = commit(Gitops, "sp_typo"),
    start(Config, #{health_grace => 5000, backoff_base => 3600000}),
    ok = wait_until(fun() -> healthy(sp_web) end, 100),
    {ok, #{last_commit := Commit}} = bc_gitops:status(),

    %% A push of a slow app, told by a webhook: its build is under way
    %% while the browser looks.
    Slow = bc_gitops_test_apps:app_repo(Dir, "sp_slow", 15),
    bc_gitops_test_apps:plain_app(Slow, "sp_slow", "-export([init/1]).\n"
                                  "start(_, _) -> supervisor:start_link(sp_slow_app, []).\n"
                                  "init([]) -> {ok, {#{}, []}}.\n"),
    _ = commit(Slow, "v1"),
    _ = bc_gitops_test_apps:spec(Gitops, "sp_slow", "0.9.0", Slow, "env => #{}"),
    {202, _, _} = hook(port(), {github, "push", ?SECRET}, <<"{\"ref\": \"refs/heads/main\"}">>, []),
    ok = wait_until(fun() -> building(sp_slow) end, 200),
    Url = "http://127.0.0.1:" ++ integer_to_list(port()) ++ "/",
    Text = text(chromium(["--dump-dom", Url], Config)),
    ct:pal("the page as chromium rendered it:~n~ts", [Text]),
    <<Short:12/binary, _/binary>> = Commit,
    [?assertNotEqual(nomatch, binary:match(Text, Phrase), Phrase)
     || Phrase <- [<<"bc_gitops ", (atom_to_binary(node(), utf8))/binary, " reconciling">>,
                   <<"Branch main">>, <<"Commit ", Short/binary>>,
                   <<"sp_slow deploy building">>,
                   <<"sp_web 1.4.2 running healthy">>,
                   <<"sp_broken 1.0.0 not_deployed">>,
                   <<"1.0.0 failed: {start_failed,">>, <<"refuses_to_start">>,
                   <<"sp_front 1.0.0 not_deployed">>,
                   <<"waits: {dependency_not_ready,sp_broken}">>,
                   <<"apps/sp_typo/app.config:2: source.type">>,
                   <<"deploy sp_broken 1.0.0 deploy sp_front 1.0.0">>, <<"deploy sp_broken 1.0.0 failed">>,
                   <<"webhook from github: triggered">>]],
    Shot = filename:join(?config(priv_dir, Config), "status-page.png"),
    _ = chromium(["--hide-scrollbars", "--window-size=1280,1280", "--screenshot=" ++ Shot, Url], Config),
    {ok, <<137, "PNG\r\n", 26, "\n", _:32, "IHDR", W:32, H:32, _/binary>>} = file:read_file(Shot),
    ?assertEqual({1280, 1280}, {W, H}),
    case os:getenv("BC_GITOPS_SCREENSHOT") of
        false -> ok;
        Path -> {ok, _} = file:copy(Shot, Path)
    end,
    %% Once the build is done: sp_slow runs, nothing runs now.
    ok = wait_until(fun() -> lists:keymember(sp_slow, 1, application:which_applications()) end, 600),
    wait_reconciled(30000),
    After = text(chromium(["--dump-dom", Url], Config)),
    [?assertNotEqual(nomatch, binary:match(After, Phrase), Phrase)
     || Phrase <- [<<"sp_slow 0.9.0 running healthy">>, <<"Nothing runs.">>]].

%% Malformed JSON, unknown paths, wrong methods, oversized headers and
%% bodies, chunked bodies, bad lengths and garbage: each a clear 4xx.
bad_requests_get_clear_answers(Config) ->
    start(Config, #{runtime_module => bc_gitops_test_runtime}),
    Port = port(),
    {400, _, Json} = hook(Port, {github, "push", ?SECRET}, <<"{\"ref\": ">>, []),
    {ok, #{<<"error">> := <<"bad_json">>, <<"line">> := 1, <<"message">> := BadJson}} =
        bc_gitops_json:decode(Json),
    ?assertMatch({match, _}, re:run(BadJson, "^the body is not JSON: .* column 8$")),
    ?assertMatch({400, _, _}, hook(Port, {github, "push", ?SECRET}, <<"[1, 2]">>, [])),
    ?assertMatch({404, #{<<"content-type">> := <<"application/json">>}, _},
                 request(Port, "GET", "/nope", [])),
    ?assertMatch({404, _, _}, request(Port, "GET", "/api/status/", [])),
    ?assertMatch({405, #{<<"allow">> := <<"GET, HEAD">>}, _}, request(Port, "DELETE", "/api/status", [])),
    ?assertMatch({405, #{<<"allow">> := <<"POST">>}, _}, request(Port, "GET", "/hooks/github", [])),
    ?assertMatch({405, _, _}, request(Port, "BREW", "/", [])),
    Many = [{"x-h" ++ integer_to_list(I), "v"} || I <- lists:seq(1, 100)],
    ?assertMatch({431, _, _}, request(Port, "GET", "/api/status", Many)),
    ?assertMatch({431, _, _}, request(Port, "GET", "/api/status", [{"x-big", lists:duplicate(10000, $a)}])),
    Wide = [{"x-w" ++ integer_to_list(I), lists:duplicate(4000, $b)} || I <- lists:seq(1, 5)],
    ?assertMatch({431, _, _}, request(Port, "GET", "/api/status", Wide)),
    ?assertMatch({414, _, _}, request(Port, "GET", "/" ++ lists:duplicate(10000, $p), [])),
    ?assertMatch({411, _, _}, request(Port, "POST", "/hooks/generic",
                                      [{"transfer-encoding", "chunked"}], <<"5\r\nhello\r\n0\r\n\r\n">>)),
    ?assertMatch({400, _, _}, request(Port, "POST", "/hooks/generic", [{"content-length", "ten"}])),
    ?assertMatch({400, _, _}, bc_gitops_http_client:parse(
                                bc_gitops_http_client:raw(Port, <<0, 1, 2, "hello\r\n\r\n">>))),
    ?assertMatch({400, _, _}, bc_gitops_http_client:parse(
                                bc_gitops_http_client:raw(Port, <<"GET http://x/ HTTP/1.1\r\n\r\n">>))),
    %% Over 1 MiB: 413 before the body is read, and counted as a webhook.
    Big = binary:copy(<<"x">>, 1048577),
    ?assertMatch({413, _, _}, hook(Port, {github, "push", ?SECRET}, Big, [])),
    Exact = binary:copy(<<" ">>, 1048576 - 2),
    ?assertMatch({400, _, _}, hook(Port, {github, "push", ?SECRET}, <<"{", Exact/binary, "]">>, [])),
    {200, _, Metrics} = request(Port, "GET", "/metrics", []),
    ?assertEqual(1, value(Metrics, <<"bc_gitops_webhooks_total{source=\"github\",result=\"too_large\"}">>)),
    ?assertEqual(3, value(Metrics, <<"bc_gitops_webhooks_total{source=\"github\",result=\"bad_request\"}">>)).

%% A client that sends its headers a byte at a time and never ends, and
%% one that sends nothing: each is answered 408 and cut at 5 s.
stalling_client_is_cut(Config) ->
    start(Config, #{runtime_module => bc_gitops_test_runtime}),
    Port = port(),
    Dribble = fun(S) -> [begin ok = gen_tcp:send(S, [C]), timer:sleep(100) end
                         || C <- "GET /api/status HTTP/1.1\r\nx-slow: " ++ lists:duplicate(200, $z)]
              end,
    [begin
         {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
         T0 = erlang:monotonic_time(millisecond),
         Sender = spawn(fun() -> catch Feed(S) end),
         {ok, Answer} = gen_tcp:recv(S, 0, 10000),
         Took = erlang:monotonic_time(millisecond) - T0,
         exit(Sender, kill),
         ct:pal("cut after ~b ms: ~p", [Took, Answer]),
         ?assertMatch(<<"HTTP/1.1 408 Request Timeout\r\n", _/binary>>, Answer),
         ?assert(Took >= 4900 andalso Took < 7000),
         gen_tcp:close(S)
     end || Feed <- [Dribble, fun(_) -> timer:sleep(20000) end]],
    {ok, _} = bc_gitops:status().

%% 1,000 random requests (any method, path, header, body, and bytes that
%% are not HTTP): each gets a 2xx or 4xx answer, never a 5xx; the
%% reconciler and the listener are the same processes after, and answer.
random_requests_leave_reconciler_alone(Config) ->
    start(Config, #{runtime_module => bc_gitops_test_runtime}),
    Port = port(),
    Reconciler = whereis(bc_gitops_reconciler),
    Listener = whereis(bc_gitops_http),
    %% 25 clients of 40 requests each (a request that never ends its
    %% head waits out its 5 s).
    Self = self(),
    Clients = [spawn_link(fun() ->
                                  rand:seed(exsss, {16, 1000, I}),
                                  Self ! {statuses, self(), [random_request(Port) || _ <- lists:seq(1, 40)]}
                          end) || I <- lists:seq(1, 25)],
    Statuses = lists:append([receive {statuses, C, S} -> S after 120000 -> ct:fail(stuck) end
                             || C <- Clients]),
    ?assertEqual(1000, length(Statuses)),
    Counts = lists:foldl(fun(S, M) -> maps:update_with(S, fun(N) -> N + 1 end, 1, M) end, #{}, Statuses),
    ct:pal("statuses of 1,000 random requests: ~p", [Counts]),
    ?assertEqual([], [S || S <- Statuses, not (S >= 200 andalso S < 500)]),
    ?assertEqual(Reconciler, whereis(bc_gitops_reconciler)),
    ?assertEqual(Listener, whereis(bc_gitops_http)),
    ?assertMatch({ok, #{status := synced}}, bc_gitops:status()),
    ok = bc_gitops:reconcile().

%% Secrets (webhook_secret, the token, git_token, notify secrets and URL
%% credentials) never show in an answer or a log line, even when a
%% request carries one where it is echoed.
secrets_never_shown(Config) ->
    Receiver = "http://alice:pw-notify-secret@127.0.0.1:9/private-path-secret",
    ok = logger:set_primary_config(level, info),
    try
        {ok, _} = bc_gitops:start_reconciler(
                    base(Config, #{http => #{port => 0, token => ?TOKEN}, webhook_secret => ?SECRET,
                                   git_token => "git-token-secret-1", runtime_module => bc_gitops_test_runtime,
                                   notify => [#{url => Receiver, secret => "notify-hmac-secret"}]})),
        wait_reconciled(20000),
        Port = port(),
        Auth = [{"authorization", "Bearer " ++ ?TOKEN}],
        Answers = [request(Port, "GET", "/api/apps/" ++ ?SECRET, Auth),
                   request(Port, "GET", "/api/apps/" ++ ?TOKEN, Auth),
                   request(Port, "GET", "/" ++ ?TOKEN, Auth),
                   request(Port, "GET", "/api/status", [{"authorization", "Bearer " ++ ?SECRET}]),
                   hook(Port, {github, "push", ?SECRET},
                        iolist_to_binary(["{\"ref\": \"refs/heads/", ?SECRET, "\"}"]), []),
                   hook(Port, {gitlab, "Push Hook", ?TOKEN}, <<"{}">>, []),
                   request(Port, "GET", "/", Auth), request(Port, "GET", "/api/status", Auth),
                   request(Port, "GET", "/api/plan", Auth), request(Port, "GET", "/metrics", Auth)],
        ?assertMatch([{404, _, _}, {404, _, _}, {404, _, _}, {401, _, _}, {200, _, _}, {401, _, _}
                      | _], Answers),
        {200, _, Ignored} = lists:nth(5, Answers),
        ?assertMatch({ok, #{<<"reason">> := <<"ref refs/heads/*** is not the tracked branch main">>}},
                     bc_gitops_json:decode(Ignored)),
        %% A crash report of the reconciler: its state, the config redacted.
        {status, _, _, Items} = sys:get_status(bc_gitops_reconciler),
        Secrets = [?SECRET, ?TOKEN, "git-token-secret-1", "pw-notify-secret", "private-path-secret",
                   "notify-hmac-secret"],
        Texts = [iolist_to_binary([integer_to_list(S), maps:values(H), B]) || {S, H, B} <- Answers]
            ++ [iolist_to_binary(io_lib:format("~p", [Items]))] ++ bc_gitops_test_logs:lines(),
        ct:pal("~b log lines, ~b answers checked", [length(bc_gitops_test_logs:lines()), length(Answers)]),
        ?assertEqual([], [{S, T} || S <- Secrets, T <- Texts, binary:match(T, list_to_binary(S)) =/= nomatch])
    after
        logger:set_primary_config(level, notice)
    end.

%%% Helpers

base(Config, Extra) ->
    maps:merge(#{repo_url => ?config(gitops, Config),
                 local_path => filename:join(?config(dir, Config), "state"),
                 reconcile_interval => 3600000}, Extra).

start(Config, Extra) ->
    {ok, _} = bc_gitops:start_reconciler(
                base(Config, maps:merge(#{http => #{port => 0}, webhook_secret => ?SECRET}, Extra))),
    wait_reconciled(60000).

port() ->
    {ok, Port} = bc_gitops:http_port(),
    Port.

%% Telemetry events sent to this process.
watch(Events) ->
    Self = self(),
    telemetry:attach_many(<<"http_suite">>, Events,
                          fun(E, M, Meta, _) -> Self ! {event, erlang:monotonic_time(), E, M, Meta} end,
                          none).

events() ->
    receive {event, T, E, M, Meta} -> [{T, E, M, Meta} | events()]
    after 0 -> []
    end.

%% Reconcile starts seen within Ms.
starts(Ms) ->
    receive {event, T, [bc_gitops, reconcile, start], _, _} -> [T | starts(Ms)]
    after Ms -> []
    end.

%% status()'s in_progress entries of App, every 20 ms, until the reconcile ends.
poll_progress(App, Acc) ->
    receive
        {reconciled, _} = Done -> self() ! Done, lists:reverse(Acc)
    after 20 ->
        {ok, #{in_progress := Entries}} = bc_gitops:status(),
        poll_progress(App, lists:reverse([E || #{app := A} = E <- Entries, A =:= App], Acc))
    end.

%% The entries where the phase changed.
dedup([#{phase := P} = A, #{phase := P} | Rest]) -> dedup([A | Rest]);
dedup([A | Rest]) -> [A | dedup(Rest)];
dedup([]) -> [].

building(App) ->
    {ok, #{in_progress := Entries}} = bc_gitops:status(),
    [building] =:= [P || #{app := A, phase := P} <- Entries, A =:= App].

healthy(App) ->
    case bc_gitops:get_app_status(App) of
        {ok, #app_state{health = healthy}} -> true;
        _ -> false
    end.

wait_until(_Fun, 0) ->
    ct:fail(condition_not_met);
wait_until(Fun, N) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(100), wait_until(Fun, N - 1)
    end.

%% The value of one series in a Prometheus text.
value(Text, Series) ->
    [Line] = [L || L <- binary:split(Text, <<"\n">>, [global]),
                   binary:longest_common_prefix([L, <<Series/binary, " ">>]) =:= byte_size(Series) + 1],
    [_, V] = binary:split(Line, <<" ">>),
    try binary_to_integer(V) catch error:badarg -> binary_to_float(V) end.

%% promtool check metrics reads stdin only: perl (Debian's perl-base,
%% always there) opens the file as its stdin and execs it; no shell.
promtool(Text, Dir) ->
    File = filename:join(Dir, "metrics.txt"),
    ok = file:write_file(File, Text),
    run(os:find_executable("perl"),
        ["-e", "open(STDIN, '<', $ARGV[0]) or die $!; exec('promtool', 'check', 'metrics') or die $!",
         File], 60000).

run(Exe, Args, Timeout) ->
    Port = open_port({spawn_executable, Exe},
                     [{args, Args}, exit_status, binary, stderr_to_stdout, use_stdio]),
    collect(Port, [], Timeout).

collect(Port, Acc, Timeout) ->
    receive
        {Port, {data, D}} -> collect(Port, [Acc, D], Timeout);
        {Port, {exit_status, S}} -> {S, iolist_to_binary(Acc)}
    after Timeout ->
        port_close(Port),
        ct:fail({timeout, iolist_to_binary(Acc)})
    end.

%% Headless chromium on a fresh profile; its stdout.
chromium(Args, Config) ->
    Profile = filename:join(?config(priv_dir, Config),
                            "chromium_" ++ integer_to_list(erlang:unique_integer([positive]))),
    Exe = os:find_executable("chromium"),
    ?assert(is_list(Exe)),
    Port = open_port({spawn_executable, Exe},
                     [{args, ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                              "--no-first-run", "--disable-background-networking",
                              "--disable-component-update", "--disable-sync", "--log-level=3",
                              "--user-data-dir=" ++ Profile | Args]},
                      exit_status, binary, use_stdio]),
    {0, Out} = collect(Port, [], 120000),
    Out.

%% The text of an HTML page, as one line.
text(Html) ->
    NoStyle = re:replace(Html, "<style>.*</style>", "", [dotall, {return, binary}]),
    NoTags = re:replace(NoStyle, "<[^>]*>", " ", [global, {return, binary}]),
    Unescaped = lists:foldl(fun({E, C}, B) -> binary:replace(B, E, C, [global]) end, NoTags,
                            [{<<"&amp;">>, <<"&">>}, {<<"&lt;">>, <<"<">>}, {<<"&gt;">>, <<">">>},
                             {<<"&quot;">>, <<"\"">>}, {<<"&#39;">>, <<"'">>},
                             {<<"&rarr;">>, <<"->">>}]),
    iolist_to_binary(lists:join(" ", string:lexemes(Unescaped, " \n\t\r"))).

unload_telemetry() ->
    _ = code:purge(telemetry),
    true = code:delete(telemetry),
    _ = code:purge(telemetry),
    false = erlang:module_loaded(telemetry),
    ok.

%% One random request: a 2xx..4xx status, or 400 for what is not HTTP.
random_request(Port) ->
    Methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "X"],
    Paths = ["/", "/api/status", "/api/plan", "/api/apps/" ++ rand_text(8), "/metrics",
             "/hooks/github", "/hooks/gitlab", "/hooks/generic", "/" ++ rand_text(20),
             "/hooks/" ++ rand_text(5), "/api/apps/", "/%00%ff", "/api/apps/%zz"],
    Method = pick(Methods),
    Path = pick(Paths),
    Headers = [{pick(["x-github-event", "x-gitlab-event", "x-hub-signature-256", "x-gitlab-token",
                      "content-type", "authorization", "x-" ++ rand_text(6)]),
                pick(["push", "ping", "Push Hook", "sha256=" ++ rand_text(64), "Bearer x",
                      "application/x-www-form-urlencoded", rand_text(30)])}
               || _ <- lists:seq(1, rand:uniform(6) - 1)],
    Body = case rand:uniform(4) of
               1 -> <<>>;
               2 -> <<"{\"ref\": \"refs/heads/main\"}">>;
               3 -> crypto:strong_rand_bytes(rand:uniform(2000));
               4 -> <<"payload=", (crypto:strong_rand_bytes(50))/binary>>
           end,
    Answer = case rand:uniform(10) of
                 1 -> bc_gitops_http_client:raw(Port, crypto:strong_rand_bytes(rand:uniform(300)));
                 _ -> bc_gitops_http_client:raw(
                        Port, [Method, " ", Path, " HTTP/1.1\r\n", [[K, ": ", V, "\r\n"] || {K, V} <- Headers],
                               "content-length: ", integer_to_list(byte_size(Body)), "\r\n\r\n", Body])
             end,
    case Answer of
        <<"HTTP/1.1 ", Code:3/binary, _/binary>> -> binary_to_integer(Code);
        Other -> ct:fail({not_an_answer, Other})
    end.

pick(List) ->
    lists:nth(rand:uniform(length(List)), List).

rand_text(N) ->
    [lists:nth(rand:uniform(36), "abcdefghijklmnopqrstuvwxyz0123456789") || _ <- lists:seq(1, N)].
