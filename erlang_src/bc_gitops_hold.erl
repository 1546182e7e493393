%%% @doc Why a planned action must wait, and the record of past failures
%%% and repairs those reasons are read from.
%%%
%%% A backoff belongs to the spec that failed: a failed action is retried
%%% after `backoff_base', doubling up to `backoff_max', but a commit that
%%% changes the app's spec (any field, not only the version) is acted on at
%%% once. A version rolled back (unhealthy, or its `code_change' failed) is
%%% not tried again until its spec changes, or an explicit reconcile after
%%% its backoff. Drift repairs of an app that keeps dying back off the same
%%% way; the count starts again once the app has run for `backoff_max'
%%% since its last repair (as Kubernetes forgets a crash loop after ten
%%% minutes up). A pinned app ({@link bc_gitops_pins}) is left at its
%%% version, `{pinned, Vsn}', while git keeps the spec it had when it was
%%% pinned; its dependents go on (it runs).
-module(bc_gitops_hold).

-include("bc_gitops.hrl").

-export([new/2, reason/2, record/4, hold/2, wait/3, is_held/2, failures/1, repairs/1,
         forget_repairs/3, delay/2]).

-export_type([hold/0, failure/0, repair/0]).

%% An app's last action failed: how often in a row, when it may be tried
%% again, why, and the spec (and its version) that failed; `undefined' for
%% a removal.
-type failure() :: #{attempts := pos_integer(), retry_at := integer(), reason := term(),
                     version := binary(), spec := #app_spec{} | undefined}.

%% Drift repairs of an app in a row: how many, when the next may be done,
%% what the last one repaired (stopped or failed), when, and of which spec.
-type repair() :: #{count := pos_integer(), retry_at := integer(), reason := term(),
                    repaired_at := integer(), spec := #app_spec{}}.

%% What decides whether an action waits: the failures and repairs so far,
%% the apps held in this run, the time (the config's clock), whether
%% someone asked for this reconcile, and the apps the runtime reports in
%% the middle of something.
-type hold() :: #{failures := #{atom() => failure()}, repairs := #{atom() => repair()},
                  held := [atom()], now := integer(), config := bc_gitops_config:config(),
                  manual := boolean(), busy := #{atom() => atom()},
                  pins := bc_gitops_pins:pins()}.

%% @doc A hold for one run: `Ctx' gives the config, the failures, the
%% repairs, the pins and whether the run was asked for; `Current' the
%% node's state.
-spec new(map(), #{atom() => #app_state{}}) -> hold().
new(#{config := #{clock := Clock} = Config} = Ctx, Current) ->
    Busy = busy(Current),
    #{failures => maps:get(failures, Ctx, #{}), repairs => maps:get(repairs, Ctx, #{}),
      held => maps:keys(Busy), now => Clock:now_ms(), config => Config,
      manual => maps:get(manual, Ctx, false), busy => Busy, pins => maps:get(pins, Ctx, #{})}.

%% Apps a runtime reports as neither up nor down but on their way
%% (`pending', `upgrading', `removing': a runtime that works in the
%% background): nothing more is asked of them until they get there, and
%% their dependents wait too.
-spec busy(#{atom() => #app_state{}}) -> #{atom() => atom()}.
busy(Current) ->
    maps:from_list([{App, S} || {App, #app_state{status = S}} <- maps:to_list(Current),
                                S =/= running, S =/= stopped, S =/= failed]).

-spec failures(hold()) -> #{atom() => failure()}.
failures(#{failures := F}) -> F.

-spec repairs(hold()) -> #{atom() => repair()}.
repairs(#{repairs := R}) -> R.

%% @doc Marks `App' as held in this run: its dependents wait.
-spec hold(atom(), hold()) -> hold().
hold(App, #{held := Held} = Hold) -> Hold#{held := [App | Held]}.

%% @doc `App' waits this run for `Why': held (its dependents wait too),
%% but a pinned app runs, and its dependents go on.
-spec wait(atom(), term(), hold()) -> hold().
wait(_App, {pinned, _}, Hold) -> Hold;
wait(App, _Why, Hold) -> hold(App, Hold).

-spec is_held(atom(), hold()) -> boolean().
is_held(App, #{held := Held}) -> lists:member(App, Held).

%% @doc Why `Action' must wait, or `none'. The first rule that holds it
%% wins.
-spec reason(bc_gitops_plan:action(), hold()) -> none | term().
reason(Action, Hold) ->
    first([fun in_progress/2, fun pinned/2, fun rolled_back/2, fun drift/2, fun repair_backoff/2,
           fun failure_backoff/2, fun dependency/2], Action, Hold).

-spec first([fun((bc_gitops_plan:action(), hold()) -> none | term())],
            bc_gitops_plan:action(), hold()) -> none | term().
first([], _Action, _Hold) ->
    none;
first([Rule | Rules], Action, Hold) ->
    case Rule(Action, Hold) of
        none -> first(Rules, Action, Hold);
        Why -> Why
    end.

%% The runtime is still busy with the app.
-spec in_progress(bc_gitops_plan:action(), hold()) -> none | term().
in_progress(Action, #{busy := Busy}) ->
    case maps:find(bc_gitops_action:app(Action), Busy) of
        {ok, Status} -> {in_progress, Status};
        error -> none
    end.

%% A pinned app stays at its version (the pins that git ended were dropped
%% before the run: bc_gitops_pins:expire/3).
-spec pinned(bc_gitops_plan:action(), hold()) -> none | term().
pinned({remove, App}, #{pins := Pins}) ->
    case bc_gitops_pins:version(App, Pins) of
        none -> none;
        V -> {pinned, V}
    end;
pinned(Action, #{pins := Pins}) ->
    App = bc_gitops_action:app(Action),
    case {bc_gitops_pins:version(App, Pins), bc_gitops_pins:running(App, Pins)} of
        {none, _} -> none;
        %% Starting it again at its pinned spec (bc_gitops_pins:redirect/2).
        {_, Spec} when Spec =:= element(2, Action) -> none;
        {V, _} -> {pinned, V}
    end.

%% A version rolled back is not tried again until the spec changes, or an
%% explicit reconcile after the backoff.
-spec rolled_back(bc_gitops_plan:action(), hold()) -> none | term().
rolled_back(Action, #{failures := Failures, now := Now, manual := Manual}) ->
    case maps:find(bc_gitops_action:app(Action), Failures) of
        {ok, #{reason := {rolled_back, _}, version := V, retry_at := At} = Failure} ->
            case same_spec(Action, Failure) andalso (not Manual orelse At > Now) of
                true -> {rolled_back, V};
                false -> none
            end;
        _ ->
            none
    end.

%% Drift: the app is at its desired version but stopped or failed. It is
%% reported, and only reported when `self_heal' is off.
-spec drift(bc_gitops_plan:action(), hold()) -> none | term().
drift({redeploy, #app_spec{name = App}, Why}, #{config := #{self_heal := Heal}})
  when Why =/= unhealthy ->
    bc_gitops_telemetry:execute([bc_gitops, drift, detected], #{},
                                #{app => App, status => Why, healed => Heal}),
    case Heal of
        true -> none;
        false -> {drift, Why}
    end;
drift(_Action, _Hold) ->
    none.

%% An app repaired at the reconciles just before, and found down again,
%% waits out its repair backoff, unless its spec changed since.
-spec repair_backoff(bc_gitops_plan:action(), hold()) -> none | term().
repair_backoff({redeploy, #app_spec{name = App} = Spec, _}, #{repairs := Repairs, now := Now}) ->
    case Repairs of
        #{App := #{count := N, retry_at := At, spec := Spec}} when At > Now -> {backoff, N, At - Now};
        _ -> none
    end;
repair_backoff(_Action, _Hold) ->
    none.

%% The app's last action for this spec failed: it waits out its backoff.
-spec failure_backoff(bc_gitops_plan:action(), hold()) -> none | term().
failure_backoff(Action, #{failures := Failures, now := Now}) ->
    case maps:find(bc_gitops_action:app(Action), Failures) of
        {ok, #{retry_at := At, attempts := N} = Failure} when At > Now ->
            case same_spec(Action, Failure) of
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

%% Whether `Action' is about the spec that failed: a removal is held by a
%% failed removal only.
-spec same_spec(bc_gitops_plan:action(), failure()) -> boolean().
same_spec({remove, _}, #{spec := Spec}) -> Spec =:= undefined;
same_spec(Action, #{spec := Spec}) -> element(2, Action) =:= Spec.

%% @doc Remembers how an action went, at `Now' (its end: a backoff counts
%% from there, a build can take longer than the delay): a failure with its
%% backoff, or a success; a repair of drift, so that repeated ones back
%% off.
-spec record(bc_gitops_plan:action(), ok | {error, term()}, integer(), hold()) -> hold().
record(Action, Result, Now, Hold) ->
    recorded(bc_gitops_action:app(Action), Action, Result, Hold#{now := Now}).

-spec recorded(atom(), bc_gitops_plan:action(), ok | {error, term()}, hold()) -> hold().
recorded(App, {redeploy, Spec, Why}, ok, #{failures := Fails, repairs := Repairs, now := Now,
                                           config := Config} = Hold) when Why =/= unhealthy ->
    Count = case Repairs of
                #{App := #{count := N, spec := Spec}} -> N + 1;
                _ -> 1
            end,
    Hold#{failures := maps:remove(App, Fails),
          repairs := Repairs#{App => #{count => Count, retry_at => Now + delay(Count, Config),
                                       reason => Why, repaired_at => Now, spec => Spec}}};
recorded(App, {redeploy, _, unhealthy}, ok, #{failures := Fails} = Hold) ->
    Hold#{failures := maps:remove(App, Fails)};
recorded(App, _Action, ok, #{failures := Fails, repairs := Repairs} = Hold) ->
    %% A new version, a new config or a removal: its crash loop, if any,
    %% was another's.
    Hold#{failures := maps:remove(App, Fails), repairs := maps:remove(App, Repairs)};
recorded(App, Action, {error, Reason}, #{failures := Fails, now := Now, config := Config} = Hold) ->
    Spec = case Action of
               {remove, _} -> undefined;
               _ -> element(2, Action)
           end,
    %% Attempts count per spec: a changed spec starts again.
    Attempts = case maps:find(App, Fails) of
                   {ok, #{attempts := N, spec := Spec}} -> N + 1;
                   _ -> 1
               end,
    Version = case Spec of
                  undefined -> <<>>;
                  #app_spec{version = V} -> V
              end,
    Hold#{failures := Fails#{App => #{attempts => Attempts,
                                      retry_at => Now + delay(Attempts, Config),
                                      reason => Reason, version => Version, spec => Spec}}}.

%% @doc Forgets the repairs of apps that have run for `backoff_max' since
%% their last repair (and were not acted on in this run: `Acted').
-spec forget_repairs([atom()], integer(), hold()) -> #{atom() => repair()}.
forget_repairs(Acted, Now, #{repairs := Repairs, config := #{backoff_max := Max}}) ->
    maps:filter(fun(App, #{repaired_at := At}) ->
                        lists:member(App, Acted) orelse Now - At < Max
                end, Repairs).

%% @doc `backoff_base' doubled for each attempt after the first, up to
%% `backoff_max'.
-spec delay(pos_integer(), bc_gitops_config:config()) -> pos_integer().
delay(Attempts, #{backoff_base := Base, backoff_max := Max}) ->
    min(Max, Base * (1 bsl min(Attempts - 1, 30))).
