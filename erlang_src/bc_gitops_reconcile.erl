%%% @doc One reconcile, start to end: pull, parse, read the current state,
%%% plan, apply. It runs in a worker process of {@link bc_gitops_reconciler},
%%% never inside the reconciler's own loop.
%%%
%%% When the commit is unchanged and nothing failed last time, the specs of
%%% the last parse are reused; the current state is still read and planned
%%% against, so drift is always seen. An app whose last action failed is
%%% retried with exponential backoff (`backoff_base' doubling up to
%%% `backoff_max'), not on every reconcile; apps that depend on it wait.
%%% Repairs of drift back off the same way: an app found stopped at
%%% several reconciles in a row (it keeps dying after each restart) is
%%% restarted after a growing delay, not at every reconcile; the count
%%% starts again once the app has run for `backoff_max' since its last
%%% repair (as Kubernetes forgets a crash loop after ten minutes up).
-module(bc_gitops_reconcile).

-include("bc_gitops.hrl").

-export([run/1, dry_run/1, current_state/1]).

-export_type([context/0, result/0, failure/0, repair/0, planned/0]).

-type failure() :: #{attempts := pos_integer(), retry_at := integer(),
                     reason := term(), version := binary()}.

%% Drift repairs of an app in a row: how many, when the next may be done,
%% and what the last one repaired (stopped or failed).
-type repair() :: #{count := pos_integer(), retry_at := integer(), reason := term(),
                    repaired_at := integer()}.

-type context() :: #{
    config := bc_gitops_config:config(),
    %% Whether someone asked for this reconcile (reconcile/0), rather than
    %% the timer.
    manual => boolean(),
    %% The last parse, reused while the commit does not change.
    cache := parsed() | undefined,
    failures := #{atom() => failure()},
    repairs => #{atom() => repair()},
    %% What the last run planned against and its plan, made from `cache',
    %% when it applied nothing: the same parse against the same state plans
    %% the same, so the plan is reused when the state is unchanged.
    previous => planned()
}.

-type planned() :: #{current := #{atom() => #app_state{}}, plan := bc_gitops_plan:plan()}.

-type parsed() :: #{commit := binary(), specs := [#app_spec{}],
                    errors := [bc_gitops_specs:diagnostic()],
                    warnings := [bc_gitops_specs:diagnostic()]}.

-type result() :: #{
    outcome := ok | {error, term()},
    cache := parsed() | undefined,
    failures := #{atom() => failure()},
    repairs => #{atom() => repair()},
    blocked => [{atom(), bc_gitops_plan:block_reason()}],
    applied => [{bc_gitops_plan:action(), ok | {error, term()}}],
    waiting => [{atom(), term()}],
    current => #{atom() => #app_state{}},
    %% When nothing was applied: the plan and the state it was made from
    %% (then `current').
    planned => planned()
}.

%% @doc A full reconcile. Never raises: a failure of the whole run is
%% `outcome => {error, Reason}', and the previous parse is kept.
-spec run(context()) -> result().
run(#{config := Config, cache := Cache, failures := Failures} = Ctx) ->
    Meta = #{repo => bc_gitops_nif:redact_url(maps:get(repo_url, Config)),
             branch => maps:get(branch, Config)},
    Start = erlang:monotonic_time(),
    bc_gitops_telemetry:execute([bc_gitops, reconcile, start],
                                #{monotonic_time => Start}, Meta),
    Result =
        try steps(Ctx)
        catch
            throw:{step_failed, Reason} -> #{outcome => {error, Reason}, cache => Cache,
                                            failures => Failures};
            Class:Reason:Stack -> #{outcome => {error, {crashed, Class, Reason, Stack}},
                                    cache => Cache, failures => Failures}
        end,
    Duration = erlang:monotonic_time() - Start,
    case Result of
        #{outcome := ok} ->
            bc_gitops_telemetry:execute([bc_gitops, reconcile, stop], #{duration => Duration},
                                        Meta#{status => summary(Result)});
        #{outcome := {error, Error}} ->
            bc_gitops_telemetry:execute([bc_gitops, reconcile, error], #{duration => Duration},
                                        Meta#{error => Error})
    end,
    Result.

%% @doc Pull, parse and plan, without applying anything: what the next
%% reconcile would do.
-spec dry_run(context()) -> {ok, bc_gitops_plan:plan(), parsed()} | {error, term()}.
dry_run(#{config := Config, cache := Cache}) ->
    try
        Parsed = parsed(Config, Cache, pull(Config), false),
        Current = current_state(maps:get(runtime_module, Config)),
        {ok, plan(Parsed, Current), Parsed}
    catch
        throw:{step_failed, Reason} -> {error, Reason}
    end.

%% @doc The runtime's view of the node; a runtime that fails here fails the
%% whole reconcile (nothing can be planned without it).
-spec current_state(module()) -> #{atom() => #app_state{}}.
current_state(Runtime) ->
    try Runtime:get_current_state() of
        {ok, Map} when is_map(Map) -> Map;
        Other -> throw({step_failed, {runtime, {bad_return, Other}}})
    catch
        throw:{step_failed, _} = T -> throw(T);
        Class:Reason -> throw({step_failed, {runtime, {crashed, Class, Reason}}})
    end.

-spec steps(context()) -> result().
steps(#{config := Config, cache := Cache, failures := Failures} = Ctx) ->
    Parsed = parsed(Config, Cache, pull(Config), map_size(Failures) > 0),
    Runtime = maps:get(runtime_module, Config),
    Current = current_state(Runtime),
    Plan = case Ctx of
               #{cache := Parsed, previous := #{current := Current, plan := Same}} -> Same;
               _ -> plan(Parsed, Current)
           end,
    #{actions := Planned, blocked := Blocked} = Plan,
    {Actions, Failures0} = retry_unhealthy(Planned, Failures, Parsed),
    %% The specs of the last parse are what ran before: a rollback goes
    %% back to them.
    Previous = case {Actions, Cache} of
                   {[], _} -> #{};
                   {_, #{specs := Old}} -> maps:from_list([{S#app_spec.name, S} || S <- Old]);
                   {_, undefined} -> #{}
               end,
    %% A busy app holds its dependents too, whether or not it has an action.
    Busy = busy(Current),
    Hold = #{failures => Failures0, repairs => maps:get(repairs, Ctx, #{}),
             held => maps:keys(Busy), now => erlang:monotonic_time(millisecond),
             config => Config, manual => maps:get(manual, Ctx, false), busy => Busy},
    {Applied, Waiting, #{failures := Failures1, repairs := Repairs}} =
        apply_actions(Runtime, Actions, Hold, Previous),
    %% An app that has run for backoff_max since its last repair is
    %% trusted again: its repairs start over.
    Now = erlang:monotonic_time(millisecond),
    Acted = [bc_gitops_actions:app(A) || A <- Actions],
    Repairs1 = maps:filter(fun(App, #{repaired_at := At}) ->
                                   lists:member(App, Acted)
                                       orelse Now - At < maps:get(backoff_max, Config)
                           end, Repairs),
    %% Nothing applied, nothing of ours changed: the state read for the plan
    %% is the state after.
    Result = #{outcome => ok, cache => Parsed, failures => Failures1, repairs => Repairs1,
               blocked => Blocked, applied => Applied, waiting => Waiting},
    case Applied of
        [] -> Result#{current => Current, planned => #{current => Current, plan => Plan}};
        _ -> Result#{current => current_state(Runtime)}
    end.

%% An app deployed but never healthy runs at its desired version, so the
%% plan has nothing for it: it stays failed (its dependents wait) until its
%% check passes, and is deployed again once its backoff is over.
-spec retry_unhealthy([bc_gitops_plan:action()], #{atom() => failure()}, parsed()) ->
    {[bc_gitops_plan:action()], #{atom() => failure()}}.
retry_unhealthy(Actions, Failures, #{specs := Specs}) ->
    Planned = [bc_gitops_actions:app(A) || A <- Actions],
    maps:fold(
      fun(App, #{reason := {unhealthy, _}, version := V}, {As, Fs}) ->
              case {lists:member(App, Planned), bc_gitops_health_monitor:health(App),
                    [S || #app_spec{name = N, version = SV} = S <- Specs, N =:= App, SV =:= V]} of
                  {false, healthy, _} -> {As, maps:remove(App, Fs)};
                  {false, _, [Spec]} -> {[{redeploy, Spec, unhealthy} | As], Fs};
                  _ -> {As, Fs}
              end;
         (_App, _Failure, Acc) ->
              Acc
      end, {Actions, Failures}, Failures).

-spec pull(bc_gitops_config:config()) -> bc_gitops_git:outcome().
pull(Config) ->
    Start = erlang:monotonic_time(),
    case bc_gitops_git:sync(bc_gitops_config:git_options(Config)) of
        {ok, #{commit := Commit, changed := Changed} = Out} ->
            bc_gitops_telemetry:execute(
              [bc_gitops, git, pull], #{duration => erlang:monotonic_time() - Start},
              #{repo => bc_gitops_nif:redact_url(maps:get(repo_url, Config)),
                branch => maps:get(branch, Config), commit => Commit, changed => Changed,
                healed => maps:get(healed, Out)}),
            Out;
        {error, Reason} ->
            throw({step_failed, {git, Reason}})
    end.

%% Parses unless the commit is unchanged and the last run left nothing to
%% retry.
-spec parsed(bc_gitops_config:config(), parsed() | undefined,
             bc_gitops_git:outcome(), boolean()) -> parsed().
parsed(_Config, #{commit := Commit} = Cache, #{commit := Commit, changed := false}, false) ->
    Cache;
parsed(Config, _Cache, #{commit := Commit}, _Retry) ->
    Start = erlang:monotonic_time(),
    case bc_gitops_specs:parse_dir(bc_gitops_config:checkout_dir(Config),
                                   maps:get(apps_dir, Config)) of
        {ok, #{specs := Specs, errors := Errors} = Out} ->
            bc_gitops_telemetry:execute(
              [bc_gitops, parse, stop],
              #{duration => erlang:monotonic_time() - Start, spec_count => length(Specs),
                error_count => length(Errors)},
              #{commit => Commit, errors => Errors}),
            Out#{commit => Commit};
        {error, Reason} ->
            throw({step_failed, {apps_dir, Reason}})
    end.

-spec plan(parsed(), #{atom() => #app_state{}}) -> bc_gitops_plan:plan().
plan(#{specs := Specs, errors := Errors}, Current) ->
    {ok, Plan} = bc_gitops_plan:plan(Specs, Current, [A || #{app := A} <- Errors]),
    Plan.

%% What decides whether an action waits: the failures and repairs so far,
%% the apps held in this run, the time, whether someone asked, and the apps
%% the runtime reports in the middle of something.
-type hold() :: #{failures := #{atom() => failure()}, repairs := #{atom() => repair()},
                  held := [atom()], now := integer(), config := bc_gitops_config:config(),
                  manual := boolean(), busy := #{atom() => atom()}}.

%% Apps a runtime reports as neither up nor down but on their way
%% (`pending', `upgrading', `removing': a runtime that works in the
%% background): nothing more is asked of them until they get there.
-spec busy(#{atom() => #app_state{}}) -> #{atom() => atom()}.
busy(Current) ->
    maps:from_list([{App, S} || {App, #app_state{status = S}} <- maps:to_list(Current),
                                S =/= running, S =/= stopped, S =/= failed]).

%% Runs the actions in order. An app in backoff waits; so does an app whose
%% dependency failed or waits in this run.
-spec apply_actions(module(), [bc_gitops_plan:action()], hold(), #{atom() => #app_spec{}}) ->
    {[{bc_gitops_plan:action(), ok | {error, term()}}], [{atom(), term()}], hold()}.
apply_actions(Runtime, Actions, Hold, Previous) ->
    {Applied, Waiting, Hold1} =
        lists:foldl(
          fun(Action, {Done, Wait, #{held := Held, config := Config} = H}) ->
                  App = bc_gitops_actions:app(Action),
                  case hold_reason(Action, H) of
                      none ->
                          Result = bc_gitops_rollout:run(Runtime, Action,
                                                         maps:get(App, Previous, undefined),
                                                         Config),
                          Held1 = case Result of ok -> Held; _ -> [App | Held] end,
                          %% A backoff counts from the end of the action: a
                          %% build can take longer than the delay.
                          Now = erlang:monotonic_time(millisecond),
                          {[{Action, Result} | Done], Wait,
                           record(App, Action, Result, H#{held := Held1, now := Now})};
                      Why ->
                          {Done, [{App, Why} | Wait], H#{held := [App | Held]}}
                  end
          end, {[], [], Hold}, Actions),
    {lists:reverse(Applied), lists:reverse(Waiting), Hold1}.

%% Why an action must wait, or `none'. The first rule that holds it wins.
-spec hold_reason(bc_gitops_plan:action(), hold()) -> none | term().
hold_reason(Action, Hold) ->
    hold_reason([fun in_progress/2, fun rolled_back/2, fun drift/2, fun repair_backoff/2,
                 fun failure_backoff/2, fun dependency/2], Action, Hold).

-spec hold_reason([fun((bc_gitops_plan:action(), hold()) -> none | term())],
                  bc_gitops_plan:action(), hold()) -> none | term().
hold_reason([], _Action, _Hold) ->
    none;
hold_reason([Rule | Rules], Action, Hold) ->
    case Rule(Action, Hold) of
        none -> hold_reason(Rules, Action, Hold);
        Why -> Why
    end.

%% The runtime is still busy with the app.
-spec in_progress(bc_gitops_plan:action(), hold()) -> none | term().
in_progress(Action, #{busy := Busy}) ->
    case maps:find(bc_gitops_actions:app(Action), Busy) of
        {ok, Status} -> {in_progress, Status};
        error -> none
    end.

%% A version rolled back (unhealthy, or its code_change failed) is not
%% tried again until the spec changes, or an explicit reconcile after the
%% backoff.
-spec rolled_back(bc_gitops_plan:action(), hold()) -> none | term().
rolled_back(Action, #{failures := Failures, now := Now, manual := Manual}) ->
    case maps:find(bc_gitops_actions:app(Action), Failures) of
        {ok, #{reason := {rolled_back, _}, version := V, retry_at := At}} ->
            case same_version(Action, V) andalso (not Manual orelse At > Now) of
                true -> {rolled_back, V};
                false -> none
            end;
        _ ->
            none
    end.

%% Drift: the app is at its desired version but stopped or failed. It is
%% reported, and only reported when `self_heal' is off.
-spec drift(bc_gitops_plan:action(), hold()) -> none | term().
drift({redeploy, #app_spec{name = App}, Why}, #{config := #{self_heal := Heal}}) ->
    bc_gitops_telemetry:execute([bc_gitops, drift, detected], #{},
                                #{app => App, status => Why, healed => Heal}),
    case Heal of
        true -> none;
        false -> {drift, Why}
    end;
drift(_Action, _Hold) ->
    none.

%% An app repaired at the reconciles just before, and found down again,
%% waits out its repair backoff.
-spec repair_backoff(bc_gitops_plan:action(), hold()) -> none | term().
repair_backoff({redeploy, #app_spec{name = App}, _}, #{repairs := Repairs, now := Now}) ->
    case Repairs of
        #{App := #{count := N, retry_at := At}} when At > Now -> {backoff, N, At - Now};
        _ -> none
    end;
repair_backoff(_Action, _Hold) ->
    none.

%% The app's last action for this version failed: it waits out its backoff.
-spec failure_backoff(bc_gitops_plan:action(), hold()) -> none | term().
failure_backoff(Action, #{failures := Failures, now := Now}) ->
    case maps:find(bc_gitops_actions:app(Action), Failures) of
        {ok, #{retry_at := At, version := V, attempts := N}} when At > Now ->
            case same_version(Action, V) of
                true -> {backoff, N, At - Now};
                false -> none
            end;
        _ ->
            none
    end.

%% A dependency failed or waits in this run.
-spec dependency(bc_gitops_plan:action(), hold()) -> none | term().
dependency({remove, _}, _Hold) ->
    none;
dependency(Action, #{held := Held}) ->
    case [D || D <- (element(2, Action))#app_spec.depends_on, lists:member(D, Held)] of
        [Dep | _] -> {dependency_not_ready, Dep};
        [] -> none
    end.

%% A new desired version is not held by the old version's backoff.
-spec same_version(bc_gitops_plan:action(), binary()) -> boolean().
same_version({remove, _}, _) -> true;
same_version(Action, V) -> (element(2, Action))#app_spec.version =:= V.

%% Remembers how an action went: a failure (with its backoff) or its
%% end; a repair of drift, so that repeated ones back off.
-spec record(atom(), bc_gitops_plan:action(), ok | {error, term()}, hold()) -> hold().
record(App, {redeploy, _, Why}, ok, #{failures := Fails, repairs := Repairs, now := Now,
                                      config := Config} = Hold) when Why =/= unhealthy ->
    Count = case Repairs of
                #{App := #{count := N}} -> N + 1;
                _ -> 1
            end,
    Hold#{failures := maps:remove(App, Fails),
          repairs := Repairs#{App => #{count => Count, retry_at => Now + delay(Count, Config),
                                       reason => Why, repaired_at => Now}}};
record(App, {redeploy, _, unhealthy}, ok, #{failures := Fails} = Hold) ->
    Hold#{failures := maps:remove(App, Fails)};
record(App, _Action, ok, #{failures := Fails, repairs := Repairs} = Hold) ->
    %% A new version, a new config or a removal: its crash loop, if any,
    %% was another's.
    Hold#{failures := maps:remove(App, Fails), repairs := maps:remove(App, Repairs)};
record(App, Action, {error, Reason}, #{failures := Fails, now := Now, config := Config} = Hold) ->
    Attempts = case maps:find(App, Fails) of
                   {ok, #{attempts := N}} -> N + 1;
                   error -> 1
               end,
    Version = case Action of
                  {remove, _} -> <<>>;
                  _ -> (element(2, Action))#app_spec.version
              end,
    Hold#{failures := Fails#{App => #{attempts => Attempts,
                                      retry_at => Now + delay(Attempts, Config),
                                      reason => Reason, version => Version}}}.

%% `backoff_base' doubled for each attempt after the first, up to
%% `backoff_max'.
-spec delay(pos_integer(), bc_gitops_config:config()) -> pos_integer().
delay(Attempts, #{backoff_base := Base, backoff_max := Max}) ->
    min(Max, Base * (1 bsl min(Attempts - 1, 30))).

-spec summary(result()) -> atom().
summary(#{applied := Applied, waiting := Waiting, blocked := Blocked, cache := Parsed}) ->
    Failed = [A || {A, {error, _}} <- Applied],
    case {Failed, Waiting, Blocked, maps:get(errors, Parsed)} of
        {[], [], [], []} -> synced;
        _ -> out_of_sync
    end.
