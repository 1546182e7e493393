%%% @doc Applies a plan's actions, in order, with their health gates.
%%%
%%% Runtime callbacks run one at a time, in this (the reconcile worker's)
%%% process. An action whose app has a health spec opens a gate
%%% ({@link bc_gitops_gate}) and the next actions go on at once: gates
%%% run side by side, so the grace periods of one reconcile overlap and
%%% independent apps never wait for each other's health. An action whose
%%% dependency (directly or through another waiting action) is behind an
%%% open gate is put back in line until that gate closes; if it closes
%%% unhealthy, the dependents wait for a later reconcile
%%% (`{dependency_not_ready, App}').
%%%
%%% While gates are open, a trigger of a new reconcile (`{bc_gitops_apply,
%%% trigger}' sent to this process) makes it look at git: when the branch
%%% has moved, the run ends early (`superseded') and hands its open gates,
%%% with their deadlines, to the next reconcile, which takes them over
%%% unless the new commit changed their app (as Flux's
%%% `CancelHealthCheckOnNewRevision').
-module(bc_gitops_apply).

-include("bc_gitops.hrl").

-export([run/1, trigger/1]).

-export_type([input/0, output/0]).

-type result() :: ok | {error, term()}.

-type input() :: #{runtime := module(),
                   config := bc_gitops_config:config(),
                   actions := [bc_gitops_plan:action()],
                   hold := bc_gitops_hold:hold(),
                   %% The specs that ran before, by app: a rollback goes back to them.
                   previous := #{atom() => #app_spec{}},
                   %% Gates of an earlier run to go on waiting for.
                   gates := [bc_gitops_gate:gate()],
                   %% Whether the branch has moved past what is being applied.
                   moved := fun(() -> boolean()),
                   %% The node's apps before this run, and where each change's
                   %% history entry goes (its `sink', the `commit', the
                   %% `node' in cluster mode; see bc_gitops_history).
                   current := #{atom() => #app_state{}},
                   history := #{sink := pid() | undefined, commit := binary() | undefined,
                                node => node()}}.

-type output() :: #{applied := [{bc_gitops_plan:action(), result()}],
                    waiting := [{atom(), term()}],
                    hold := bc_gitops_hold:hold(),
                    %% Gates still open when a new commit ended the run.
                    gates := [bc_gitops_gate:gate()],
                    %% Apps whose gate closed healthy.
                    healthy := [atom()],
                    superseded := boolean()}.

%% @doc Tells the applying process `Pid' that a reconcile was asked for.
-spec trigger(pid()) -> ok.
trigger(Pid) ->
    Pid ! {?MODULE, trigger},
    ok.

%% @doc Applies `Input''s actions; returns when every action ran or
%% waits, and every gate closed (or a new commit ended the run).
-spec run(input()) -> output().
run(#{actions := Actions, gates := Gates} = Input) ->
    loop(Input#{queue => Actions, open => maps:from_list([{bc_gitops_gate:app(G), G} || G <- Gates]),
                applied => [], waiting => [], healthy => []}).

-spec loop(map()) -> output().
loop(St) ->
    #{open := Open} = St1 = sweep(St),
    case map_size(Open) of
        0 -> done(St1, false);
        _ -> wait(St1)
    end.

%% One pass over the actions in line: each runs, waits (with its reason),
%% or stays in line behind an open gate.
-spec sweep(map()) -> map().
sweep(#{queue := Queue} = St) ->
    sweep(Queue, [], St#{queue := []}).

-spec sweep([bc_gitops_plan:action()], [bc_gitops_plan:action()], map()) -> map().
sweep([], Later, St) ->
    St#{queue := lists:reverse(Later)};
sweep([Action | Rest], Later, #{open := Open, hold := Hold, waiting := Waiting} = St) ->
    App = bc_gitops_action:app(Action),
    Pending = maps:keys(Open) ++ [bc_gitops_action:app(A) || A <- Later],
    case behind(Action, Pending) of
        true ->
            sweep(Rest, [Action | Later], St);
        false ->
            case bc_gitops_hold:reason(Action, Hold) of
                none ->
                    sweep(Rest, Later, apply_one(Action, St));
                Why ->
                    sweep(Rest, Later, St#{waiting := [{App, Why} | Waiting],
                                           hold := bc_gitops_hold:wait(App, Why, Hold)})
            end
    end.

%% Whether a dependency of `Action' is behind a gate or still in line.
-spec behind(bc_gitops_plan:action(), [atom()]) -> boolean().
behind({remove, _}, _Pending) ->
    false;
behind(Action, Pending) ->
    lists:any(fun(D) -> lists:member(D, Pending) end, (element(2, Action))#app_spec.depends_on).

-spec apply_one(bc_gitops_plan:action(), map()) -> map().
apply_one(Action, #{runtime := Runtime, config := Config, open := Open} = St) ->
    case bc_gitops_action:timed(Runtime, Action) of
        {ok, Facts} ->
            case bc_gitops_gate:needed(Action) of
                true ->
                    Gate = bc_gitops_gate:open(Action, previous(Action, St), Config, self(),
                                               Facts),
                    St#{open := Open#{bc_gitops_action:app(Action) => Gate}};
                false ->
                    finish(Action, ok, Facts, St)
            end;
        {Error, Facts} ->
            finish(Action, Error, Facts, St)
    end.

-spec previous(bc_gitops_plan:action(), map()) -> #app_spec{} | undefined.
previous(Action, #{previous := Previous}) ->
    maps:get(bc_gitops_action:app(Action), Previous, undefined).

%% Records how an action ended, in the hold and in the history; a failed
%% app holds its dependents.
-spec finish(bc_gitops_plan:action(), result(), bc_gitops_history:facts(), map()) -> map().
finish(Action, Result, Facts, #{config := #{clock := Clock}, hold := Hold, applied := Applied,
                                current := Current, history := Ctx} = St) ->
    App = bc_gitops_action:app(Action),
    State = maps:get(App, Current, undefined),
    From = case State of
               #app_state{version = V} -> V;
               undefined -> undefined
           end,
    ok = bc_gitops_history:record(
           maps:get(sink, Ctx), bc_gitops_history:entry(Action, Result, Facts, Ctx#{from => From}),
           bc_gitops_history:change(Action, Result, {State, previous(Action, St)})),
    Hold1 = bc_gitops_hold:record(Action, Result, Clock:now_ms(), Hold),
    Hold2 = case Result of
                ok -> Hold1;
                {error, _} -> bc_gitops_hold:hold(bc_gitops_action:app(Action), Hold1)
            end,
    St#{hold := Hold2, applied := [{Action, Result} | Applied]}.

%% Waits for a gate to close, or for a trigger that may end the run.
-spec wait(map()) -> output().
wait(#{open := Open, runtime := Runtime, moved := Moved, healthy := Healthy} = St) ->
    receive
        {bc_gitops_gate, Ref, Health} ->
            case [G || G <- maps:values(Open), bc_gitops_gate:ref(G) =:= Ref] of
                [Gate] ->
                    {Result, Rollbacks} = bc_gitops_gate:settle(Runtime, Gate, Health),
                    App = bc_gitops_gate:app(Gate),
                    Healthy1 = case Health of
                                   healthy -> [App | Healthy];
                                   _ -> Healthy
                               end,
                    St1 = finish(bc_gitops_gate:action(Gate), Result, bc_gitops_gate:facts(Gate),
                                 St#{open := maps:remove(App, Open), healthy := Healthy1}),
                    %% The rollback after it, if one ran, comes next in the history.
                    #{history := Ctx} = St,
                    _ = [bc_gitops_history:record(
                           maps:get(sink, Ctx),
                           bc_gitops_history:entry(Back, R, F, Ctx#{action => rollback}), keep)
                         || {Back, R, F} <- Rollbacks],
                    loop(St1);
                [] ->
                    wait(St)
            end;
        {?MODULE, trigger} ->
            flush_triggers(),
            case Moved() of
                true -> done(St, true);
                false -> wait(St)
            end
    end.

-spec flush_triggers() -> ok.
flush_triggers() ->
    receive {?MODULE, trigger} -> flush_triggers()
    after 0 -> ok
    end.

%% The actions still in line when a new commit ends the run wait for the
%% next reconcile.
-spec done(map(), boolean()) -> output().
done(#{applied := Applied, waiting := Waiting, hold := Hold, open := Open, queue := Queue,
       healthy := Healthy}, Superseded) ->
    Left = [{bc_gitops_action:app(A), superseded} || A <- Queue],
    #{applied => lists:reverse(Applied), waiting => lists:reverse(Waiting, Left), hold => Hold,
      gates => maps:values(Open), healthy => Healthy, superseded => Superseded}.
