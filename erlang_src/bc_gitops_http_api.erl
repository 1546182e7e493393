%%% @doc The facts the HTTP face shows, read through the Erlang API, and
%%% their JSON form.
%%%
%%% `GET /api/status' is {@link bc_gitops:status/0}, `GET /api/plan' is
%%% {@link bc_gitops:plan/0} (a dry run: it waits for a running reconcile,
%%% up to 30 s, then 504), `GET /api/apps/<app>' is what the node knows of
%%% one app (its spec, its state, why it waits or failed, what runs on it
%%% now), 404 for an app it does not know. Lists of `{App, Reason}' become
%%% `[{"app": App, "reason": Text}]'; reasons are text as `~0tp' prints
%%% them. Everything runs in the connection's process: the reconciler only
%%% answers its usual fast calls.
-module(bc_gitops_http_api).

-include("bc_gitops.hrl").

-export([facts/0, status/0, plan/0, app/1, metrics/0]).

-export_type([facts/0]).

-define(PLAN_TIMEOUT, 30000).

-type facts() :: #{node := node(),
                   status := map() | undefined,
                   desired := #{atom() => #app_spec{}},
                   current := #{atom() => #app_state{}},
                   plan := bc_gitops_plan:plan() | undefined,
                   events := [bc_gitops_events:event()],
                   cluster := map() | undefined}.

%% @doc Everything the status page shows. The pending plan is made from
%% the last parse and the state now (no git fetch, no wait).
-spec facts() -> facts().
facts() ->
    Status = ok_or(bc_gitops:status(), undefined),
    Desired = ok_or(bc_gitops:get_desired_state(), #{}),
    Current = ok_or(bc_gitops:get_current_state(), #{}),
    Invalid = [A || #{app := A} <- maps:get(spec_errors, with_default(Status), [])],
    Plan = case map_size(Desired) of
               0 when Current =:= #{} -> undefined;
               _ -> ok_or(bc_gitops_plan:plan(maps:values(Desired), Current, Invalid), undefined)
           end,
    Cluster = case Status of
                  #{cluster := _} -> ok_or(bc_gitops:cluster_status(), undefined);
                  _ -> undefined
              end,
    #{node => node(), status => Status, desired => Desired, current => Current, plan => Plan,
      events => bc_gitops_events:latest(20), cluster => Cluster}.

%% @doc `GET /api/status'.
-spec status() -> bc_gitops_http_conn:response().
status() ->
    case bc_gitops:status() of
        {ok, Status} -> bc_gitops_http_router:json(200, status_json(Status));
        {error, Why} -> unavailable(Why)
    end.

%% @doc `GET /api/plan'.
-spec plan() -> bc_gitops_http_conn:response().
plan() ->
    %% In a process of its own, so that a late answer is nobody's message.
    Self = self(),
    Tag = make_ref(),
    {Pid, Ref} = spawn_monitor(fun() -> Self ! {Tag, bc_gitops:plan()} end),
    receive
        {Tag, {ok, #{actions := Actions, blocked := Blocked}}} ->
            erlang:demonitor(Ref, [flush]),
            bc_gitops_http_router:json(200, #{actions => [action_json(A) || A <- Actions],
                                              blocked => pairs(Blocked)});
        {Tag, {error, Why}} ->
            erlang:demonitor(Ref, [flush]),
            unavailable(Why);
        {'DOWN', Ref, process, Pid, Crash} ->
            unavailable({crashed, Crash})
    after ?PLAN_TIMEOUT ->
        exit(Pid, kill),
        bc_gitops_http_router:error_response(504, busy, <<"a reconcile is running; try again">>)
    end.

%% @doc `GET /api/apps/<app>': 404 unless the node knows the app (a spec,
%% a running app or a spec error). No atom is made from the request.
-spec app(binary()) -> bc_gitops_http_conn:response().
app(Name) ->
    Facts = facts(),
    App = try binary_to_existing_atom(Name, utf8) catch error:badarg -> undefined end,
    case app_json(App, Name, Facts) of
        undefined -> bc_gitops_http_router:error_response(404, not_found, [<<"no app ">>, Name]);
        Json -> bc_gitops_http_router:json(200, Json)
    end.

%% @doc `GET /metrics'.
-spec metrics() -> iodata().
metrics() ->
    Status = ok_or(bc_gitops:status(), undefined),
    bc_gitops_metrics:render(#{status => Status, current => ok_or(bc_gitops:get_current_state(), #{}),
                               in_progress => length(maps:get(in_progress, with_default(Status), []))}).

%%% JSON forms

-spec status_json(map()) -> map().
status_json(Status) ->
    Reasons = fun(_, #{reason := R} = E) -> E#{reason := bc_gitops_json:text(R)} end,
    Status#{blocked := pairs(maps:get(blocked, Status)),
            waiting := pairs(maps:get(waiting, Status)),
            last_error := case maps:get(last_error, Status) of
                              undefined -> undefined;
                              E -> bc_gitops_json:text(E)
                          end,
            app_errors := maps:map(Reasons, maps:get(app_errors, Status)),
            repairs := maps:map(Reasons, maps:get(repairs, Status))}.

-spec pairs([{atom(), term()}]) -> [map()].
pairs(List) ->
    [#{app => App, reason => bc_gitops_json:text(Why)} || {App, Why} <- List].

-spec action_json(bc_gitops_plan:action()) -> map().
action_json({remove, App}) ->
    #{action => remove, app => App};
action_json({upgrade, #app_spec{name = App, version = V}, From}) ->
    #{action => upgrade, app => App, version => V, from => From};
action_json({redeploy, #app_spec{name = App, version = V}, Why}) ->
    #{action => redeploy, app => App, version => V, reason => Why};
action_json({Kind, #app_spec{name = App, version = V}}) ->
    #{action => Kind, app => App, version => V}.

-spec app_json(atom(), binary(), facts()) -> map() | undefined.
app_json(App, Name, #{status := Status, desired := Desired, current := Current}) ->
    S = with_default(Status),
    Spec = maps:get(App, Desired, undefined),
    State = maps:get(App, Current, undefined),
    SpecErrors = [bc_gitops_specs:format_diagnostic(E)
                  || #{app := A} = E <- maps:get(spec_errors, S, []), A =:= Name],
    case {Spec, State, SpecErrors} of
        {undefined, undefined, []} ->
            undefined;
        _ ->
            Find = fun(Key) -> case lists:keyfind(App, 1, maps:get(Key, S, [])) of
                                   {_, Why} -> bc_gitops_json:text(Why);
                                   false -> undefined
                               end
                   end,
            #{app => Name,
              desired => spec_json(Spec),
              running => state_json(State),
              spec_errors => SpecErrors,
              error => case maps:get(App, maps:get(app_errors, S, #{}), undefined) of
                           undefined -> undefined;
                           #{reason := R} = E -> E#{reason := bc_gitops_json:text(R)}
                       end,
              waiting => Find(waiting),
              blocked => Find(blocked),
              in_progress => [P || #{app := A} = P <- maps:get(in_progress, S, []), A =:= App]}
    end.

-spec spec_json(#app_spec{} | undefined) -> map() | undefined.
spec_json(undefined) ->
    undefined;
spec_json(#app_spec{version = V, description = D, depends_on = Deps, health = Health,
                    source = #source_spec{type = Type, url = Url, ref = Ref}}) ->
    #{version => V, description => D, depends_on => Deps,
      source => #{type => Type, ref => Ref,
                  url => case Url of undefined -> undefined; _ -> bc_gitops_nif:redact_url(Url) end},
      health => case Health of
                    undefined -> undefined;
                    #health_spec{type = HT, port = Port, path = Path} ->
                        #{type => HT, port => Port, path => Path}
                end}.

-spec state_json(#app_state{} | undefined) -> map() | undefined.
state_json(undefined) ->
    undefined;
state_json(#app_state{version = V, status = St, health = H, started_at = At, depends_on = Deps,
                      isolation = Isolation, node = Node}) ->
    %% `node': the guest node of an `isolation => vm' app, else null.
    #{version => V, status => St, health => H, started_at => At, depends_on => Deps,
      isolation => Isolation, node => Node}.

-spec unavailable(term()) -> bc_gitops_http_conn:response().
unavailable(Why) ->
    bc_gitops_http_router:error_response(503, unavailable, bc_gitops_json:text(Why)).

-spec ok_or({ok, T} | term(), D) -> T | D.
ok_or({ok, Value}, _Default) -> Value;
ok_or(_Error, Default) -> Default.

-spec with_default(map() | undefined) -> map().
with_default(undefined) -> #{};
with_default(Map) -> Map.
