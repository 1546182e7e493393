%%% @doc One reconcile, start to end: pull, parse, read the current state,
%%% plan, apply. It runs in a worker process of {@link bc_gitops_reconciler},
%%% never inside the reconciler's own loop.
%%%
%%% When the commit is unchanged and nothing failed last time, the specs of
%%% the last parse are reused; the current state is still read and planned
%%% against, so drift is always seen. An app whose last action failed is
%%% retried with exponential backoff (`backoff_base' doubling up to
%%% `backoff_max'), not on every reconcile; apps that depend on it wait.
-module(bc_gitops_reconcile).

-include("bc_gitops.hrl").

-export([run/1, dry_run/1, current_state/1]).

-export_type([context/0, result/0, failure/0, planned/0]).

-type failure() :: #{attempts := pos_integer(), retry_at := integer(),
                     reason := term(), version := binary()}.

-type context() :: #{
    config := bc_gitops_config:config(),
    %% Whether someone asked for this reconcile (reconcile/0), rather than
    %% the timer.
    manual => boolean(),
    %% The last parse, reused while the commit does not change.
    cache := parsed() | undefined,
    failures := #{atom() => failure()},
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
    {Applied, Waiting, Failures1} = apply_actions(Runtime, Actions, Failures0, Config, Previous,
                                                  maps:get(manual, Ctx, false)),
    %% Nothing applied, nothing of ours changed: the state read for the plan
    %% is the state after.
    Result = #{outcome => ok, cache => Parsed, failures => Failures1, blocked => Blocked,
               applied => Applied, waiting => Waiting},
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

%% Runs the actions in order. An app in backoff waits; so does an app whose
%% dependency failed or waits in this run.
-spec apply_actions(module(), [bc_gitops_plan:action()], #{atom() => failure()},
                    bc_gitops_config:config(), #{atom() => #app_spec{}}, boolean()) ->
    {[{bc_gitops_plan:action(), ok | {error, term()}}], [{atom(), term()}],
     #{atom() => failure()}}.
apply_actions(Runtime, Actions, Failures, Config, Previous, Manual) ->
    Now = erlang:monotonic_time(millisecond),
    {Applied, Waiting, Failures1, _Held} =
        lists:foldl(
          fun(Action, {Done, Wait, Fails, Held}) ->
                  App = bc_gitops_actions:app(Action),
                  case hold_reason(Action, Fails, Held, Now, Config, Manual) of
                      none ->
                          Result = bc_gitops_rollout:run(Runtime, Action,
                                                         maps:get(App, Previous, undefined),
                                                         Config),
                          Fails1 = record(App, Action, Result, Fails, Config, Now),
                          Held1 = case Result of ok -> Held; _ -> [App | Held] end,
                          {[{Action, Result} | Done], Wait, Fails1, Held1};
                      Why ->
                          {Done, [{App, Why} | Wait], Fails, [App | Held]}
                  end
          end, {[], [], Failures, []}, Actions),
    {lists:reverse(Applied), lists:reverse(Waiting), Failures1}.

-spec hold_reason(bc_gitops_plan:action(), #{atom() => failure()}, [atom()], integer(),
                  bc_gitops_config:config(), boolean()) -> none | term().
hold_reason(Action, Failures, Held, Now, Config, Manual) ->
    App = bc_gitops_actions:app(Action),
    case maps:find(App, Failures) of
        %% A version rolled back for being unhealthy is not tried again
        %% until the spec changes, or an explicit reconcile after the backoff.
        {ok, #{reason := {rolled_back, _}, version := V, retry_at := At}} ->
            case same_version(Action, V) andalso (not Manual orelse At > Now) of
                true -> {rolled_back, V};
                false -> hold_reason(Action, Failures, Held, Now, Config)
            end;
        _ ->
            hold_reason(Action, Failures, Held, Now, Config)
    end.

-spec hold_reason(bc_gitops_plan:action(), #{atom() => failure()}, [atom()], integer(),
                  bc_gitops_config:config()) -> none | term().
hold_reason({redeploy, #app_spec{name = App}, Why} = Action, Failures, Held, Now, Config) ->
    %% Drift: the app is at its desired version but stopped or failed.
    Heal = maps:get(self_heal, Config),
    bc_gitops_telemetry:execute([bc_gitops, drift, detected], #{},
                                #{app => App, status => Why, healed => Heal}),
    case Heal of
        true -> hold_reason(Action, Failures, Held, Now);
        false -> {drift, Why}
    end;
hold_reason(Action, Failures, Held, Now, _Config) ->
    hold_reason(Action, Failures, Held, Now).

-spec hold_reason(bc_gitops_plan:action(), #{atom() => failure()}, [atom()], integer()) ->
    none | term().
hold_reason(Action, Failures, Held, Now) ->
    App = bc_gitops_actions:app(Action),
    Deps = case Action of
               {remove, _} -> [];
               _ -> (element(2, Action))#app_spec.depends_on
           end,
    case {maps:find(App, Failures), [D || D <- Deps, lists:member(D, Held)]} of
        {{ok, #{retry_at := At, version := V} = F}, _} when At > Now ->
            case same_version(Action, V) of
                true -> {backoff, maps:get(attempts, F), At - Now};
                false -> none
            end;
        {_, [Dep | _]} ->
            {dependency_not_ready, Dep};
        _ ->
            none
    end.

%% A new desired version is not held by the old version's backoff.
-spec same_version(bc_gitops_plan:action(), binary()) -> boolean().
same_version({remove, _}, _) -> true;
same_version(Action, V) -> (element(2, Action))#app_spec.version =:= V.

-spec record(atom(), bc_gitops_plan:action(), ok | {error, term()}, #{atom() => failure()},
             bc_gitops_config:config(), integer()) -> #{atom() => failure()}.
record(App, _Action, ok, Fails, _Config, _Now) ->
    maps:remove(App, Fails);
record(App, Action, {error, Reason}, Fails, #{backoff_base := Base, backoff_max := Max}, Now) ->
    Attempts = case maps:find(App, Fails) of
                   {ok, #{attempts := N}} -> N + 1;
                   error -> 1
               end,
    Delay = min(Max, Base * (1 bsl min(Attempts - 1, 30))),
    Version = case Action of
                  {remove, _} -> <<>>;
                  _ -> (element(2, Action))#app_spec.version
              end,
    Fails#{App => #{attempts => Attempts, retry_at => Now + Delay, reason => Reason,
                    version => Version}}.

-spec summary(result()) -> atom().
summary(#{applied := Applied, waiting := Waiting, blocked := Blocked, cache := Parsed}) ->
    Failed = [A || {A, {error, _}} <- Applied],
    case {Failed, Waiting, Blocked, maps:get(errors, Parsed)} of
        {[], [], [], []} -> synced;
        _ -> out_of_sync
    end.
