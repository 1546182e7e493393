%%% @doc Health gates: after a deploy or an upgrade of an app with a health
%%% spec, the app must become healthy within `health_grace' ms.
%%%
%%% A gate is a process of its own that checks the app until it is healthy
%%% or the grace period is over, and sends the result to the process that
%%% opened it. Gates of one reconcile run side by side, so independent apps
%%% never wait for each other's health: only an app's dependents wait for
%%% its gate ({@link bc_gitops_apply}).
%%%
%%% When a gate closes unhealthy, {@link settle/3} (in the applying worker,
%%% where runtime callbacks run one at a time) decides what follows: an
%%% upgrade is rolled back to the version that ran before (hot where
%%% possible, through the runtime's own `upgrade/2') and reported as
%%% `{error, {rolled_back, Reason}}', with `[bc_gitops, rollback, stop]'; a
%%% first deploy (or a redeploy) is reported as `{error, {unhealthy,
%%% Reason}}'.
-module(bc_gitops_gate).

-include("bc_gitops.hrl").

-export([needed/1, open/5, reopen/2, settle/3, app/1, action/1, ref/1, facts/1]).
-export([watch/5]).

-export_type([gate/0]).

%% How often a gated app's health is looked at while waiting for it.
-define(POLL_MS, 200).

-opaque gate() :: #{app := atom(), action := bc_gitops_plan:action(),
                    previous := #app_spec{} | undefined, deadline := integer(),
                    opened := integer(), ref := reference(), pid := pid(),
                    %% How the gated action went, for its history entry.
                    facts := bc_gitops_history:facts()}.

%% @doc Whether `Action' must pass a health gate: a deploy, a redeploy or
%% an upgrade of an app with a health spec.
-spec needed(bc_gitops_plan:action()) -> boolean().
needed({deploy, #app_spec{health = H}}) -> H =/= undefined;
needed({redeploy, #app_spec{health = H}, _}) -> H =/= undefined;
needed({upgrade, #app_spec{health = H}, _}) -> H =/= undefined;
needed(_Action) -> false.

%% @doc Opens a gate for `Action', just applied (`Facts' say how);
%% `Previous' is the spec that ran before, if known (an upgrade goes back
%% to it). The gate closes `health_grace' ms from now on the config's
%% clock; its result comes to `Owner' as `{bc_gitops_gate, Ref, healthy |
%% {unhealthy, Why}}'.
-spec open(bc_gitops_plan:action(), #app_spec{} | undefined, bc_gitops_config:config(),
           pid(), bc_gitops_history:facts()) -> gate().
open(Action, Previous, #{clock := Clock, health_grace := Grace}, Owner, Facts) ->
    start(#{action => Action, previous => Previous, deadline => Clock:now_ms() + Grace,
            opened => erlang:monotonic_time(), facts => Facts}, Clock, Owner).

%% @doc Opens `Gate' again for the calling process (a later reconcile
%% that took it over), with the deadline it had: a grace period is never
%% restarted.
-spec reopen(gate(), bc_gitops_config:config()) -> gate().
reopen(Gate, #{clock := Clock}) ->
    start(maps:with([action, previous, deadline, opened, facts], Gate), Clock, self()).

-spec start(map(), module(), pid()) -> gate().
start(#{action := Action, deadline := Deadline} = Gate, Clock, Owner) ->
    #app_spec{name = App, health = Health} = element(2, Action),
    Ref = make_ref(),
    Pid = spawn_link(?MODULE, watch, [Owner, Ref, {App, Health}, Clock, Deadline]),
    Gate#{app => App, ref => Ref, pid => Pid}.

-spec app(gate()) -> atom().
app(#{app := App}) -> App.

-spec action(gate()) -> bc_gitops_plan:action().
action(#{action := Action}) -> Action.

-spec ref(gate()) -> reference().
ref(#{ref := Ref}) -> Ref.

-spec facts(gate()) -> bc_gitops_history:facts().
facts(#{facts := Facts}) -> Facts.

%% @private The gate's process: checks until healthy or the deadline.
-spec watch(pid(), reference(), {atom(), #health_spec{}}, module(), integer()) -> ok.
watch(Owner, Ref, {App, Health}, Clock, Deadline) ->
    Owner ! {?MODULE, Ref, wait_healthy(App, Health, Clock, Deadline, {unhealthy, not_checked})},
    ok.

-spec wait_healthy(atom(), #health_spec{}, module(), integer(), bc_gitops_health:result()) ->
    bc_gitops_health:result().
wait_healthy(App, Health, Clock, Deadline, Last) ->
    case Clock:now_ms() >= Deadline of
        true ->
            Last;
        false ->
            case bc_gitops_health:check(App, Health) of
                healthy ->
                    healthy;
                Unhealthy ->
                    timer:sleep(?POLL_MS),
                    wait_healthy(App, Health, Clock, Deadline, Unhealthy)
            end
    end.

%% @doc What a closed gate means for its action: `ok' when healthy; else
%% an upgrade is rolled back (to the spec that ran before, if known, at
%% the version it came from) and a deploy fails. The rollback, if one ran,
%% comes with it (its action, result and facts, for the history). Emits
%% `[bc_gitops, gate, stop]' (`duration' since it opened; `app',
%% `version', `result': `healthy' or `{unhealthy, Why}').
-spec settle(module(), gate(), bc_gitops_health:result()) ->
    {ok | {error, term()},
     [{bc_gitops_plan:action(), ok | {error, term()}, bc_gitops_history:facts()}]}.
settle(Runtime, #{app := App, action := Action, opened := Opened} = Gate, Health) ->
    bc_gitops_telemetry:execute([bc_gitops, gate, stop],
                                #{duration => erlang:monotonic_time() - Opened},
                                #{app => App, version => (element(2, Action))#app_spec.version,
                                  result => Health}),
    closed(Runtime, Gate, Health).

-spec closed(module(), gate(), bc_gitops_health:result()) ->
    {ok | {error, term()},
     [{bc_gitops_plan:action(), ok | {error, term()}, bc_gitops_history:facts()}]}.
closed(_Runtime, _Gate, healthy) ->
    {ok, []};
closed(Runtime, #{action := {upgrade, #app_spec{name = App, version = V} = Spec, From},
                  previous := Previous}, {unhealthy, Why}) ->
    Back = case Previous of
               #app_spec{} -> Previous#app_spec{version = From};
               undefined -> Spec#app_spec{version = From}
           end,
    Rollback = {upgrade, Back, V},
    {Result, Facts} = bc_gitops_action:timed(Runtime, Rollback),
    bc_gitops_telemetry:execute([bc_gitops, rollback, stop], #{},
                                #{app => App, from_version => V, to_version => From,
                                  reason => Why, result => Result}),
    case Result of
        ok -> {{error, {rolled_back, Why}}, [{Rollback, Result, Facts}]};
        {error, Again} -> {{error, {rollback_failed, Why, Again}}, [{Rollback, Result, Facts}]}
    end;
closed(_Runtime, _Gate, {unhealthy, Why}) ->
    {{error, {unhealthy, Why}}, []}.
