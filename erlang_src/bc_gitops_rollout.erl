%%% @doc Applies one deploy or upgrade and sees it through: when the app
%%% has a health spec, it must become healthy within `health_grace' ms.
%%%
%%% An upgrade that does not is rolled back to the version that ran before
%%% (hot where possible, through the runtime's own `upgrade/2'), and
%%% reported as `{error, {rolled_back, Reason}}'; a first deploy that never
%%% becomes healthy is reported as `{error, {unhealthy, Reason}}'. Both
%%% emit `[bc_gitops, rollback, stop]' or are visible in the action's stop
%%% event. Health is polled in this (worker) process, never in the
%%% reconciler's loop.
-module(bc_gitops_rollout).

-include("bc_gitops.hrl").

-export([run/4]).

%% How often a new deploy's health is looked at while waiting for it.
-define(POLL_MS, 200).

%% @doc Runs `Action'; `Previous' is the spec that ran before, if known.
-spec run(module(), bc_gitops_plan:action(), #app_spec{} | undefined,
          bc_gitops_config:config()) -> ok | {error, term()}.
run(Runtime, Action, Previous, Config) ->
    case bc_gitops_actions:summary(bc_gitops_actions:run(Runtime, Action)) of
        ok -> settle(Runtime, Action, Previous, Config);
        {error, _} = Error -> Error
    end.

-spec settle(module(), bc_gitops_plan:action(), #app_spec{} | undefined,
             bc_gitops_config:config()) -> ok | {error, term()}.
settle(Runtime, {upgrade, #app_spec{name = App, health = H, version = V} = Spec, From},
       Previous, Config) when H =/= undefined ->
    case wait_healthy(App, H, maps:get(health_grace, Config)) of
        healthy ->
            ok;
        {unhealthy, Why} ->
            Back = case Previous of
                       #app_spec{} -> Previous#app_spec{version = From};
                       undefined -> Spec#app_spec{version = From}
                   end,
            Result = bc_gitops_actions:summary(
                       bc_gitops_actions:run(Runtime, {upgrade, Back, V})),
            bc_gitops_telemetry:execute([bc_gitops, rollback, stop], #{},
                                        #{app => App, from_version => V, to_version => From,
                                          reason => Why, result => Result}),
            case Result of
                ok -> {error, {rolled_back, Why}};
                {error, Again} -> {error, {rollback_failed, Why, Again}}
            end
    end;
settle(_Runtime, {Deploy, #app_spec{name = App, health = H}} , _Previous, Config)
  when H =/= undefined, Deploy =:= deploy ->
    first_health(App, H, Config);
settle(_Runtime, {redeploy, #app_spec{name = App, health = H}, _}, _Previous, Config)
  when H =/= undefined ->
    first_health(App, H, Config);
settle(_Runtime, _Action, _Previous, _Config) ->
    ok.

-spec first_health(atom(), #health_spec{}, bc_gitops_config:config()) -> ok | {error, term()}.
first_health(App, H, Config) ->
    case wait_healthy(App, H, maps:get(health_grace, Config)) of
        healthy -> ok;
        {unhealthy, Why} -> {error, {unhealthy, Why}}
    end.

%% Checks until healthy or until the grace period is over.
-spec wait_healthy(atom(), #health_spec{}, non_neg_integer()) -> bc_gitops_health:result().
wait_healthy(App, Health, Grace) ->
    Deadline = erlang:monotonic_time(millisecond) + Grace,
    wait_healthy(App, Health, Deadline, {unhealthy, not_checked}).

-spec wait_healthy(atom(), #health_spec{}, integer(), bc_gitops_health:result()) ->
    bc_gitops_health:result().
wait_healthy(App, Health, Deadline, Last) ->
    case erlang:monotonic_time(millisecond) >= Deadline of
        true ->
            Last;
        false ->
            case bc_gitops_health:check(App, Health) of
                healthy ->
                    healthy;
                Unhealthy ->
                    timer:sleep(?POLL_MS),
                    wait_healthy(App, Health, Deadline, Unhealthy)
            end
    end.
