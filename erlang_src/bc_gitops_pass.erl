%%% @doc One reconcile pass, start to end: pull, parse, read the current
%%% state, plan, apply ({@link bc_gitops_apply}). It runs in a worker
%%% process of {@link bc_gitops_reconciler}, never inside the reconciler's
%%% own loop.
%%%
%%% When the commit is unchanged and nothing failed last time, the specs of
%%% the last parse are reused; the current state is still read and planned
%%% against, so drift is always seen. Which actions wait, and why (backoff,
%%% a rolled-back version, a dependency), is {@link bc_gitops_hold}'s call.
%%%
%%% A steady run (the last one applied nothing and left nothing to retry,
%%% and the runtime gives a state token, see {@link bc_gitops_runtime})
%%% is given neither the parse nor the state: it pulls, and when the commit
%%% and the runtime's token are those of the last run, the last result
%%% stands (`unchanged'), at a cost that does not grow with the number of
%%% apps. Otherwise it fetches the parse and the state and runs in full.
-module(bc_gitops_pass).

-include("bc_gitops.hrl").

-export([run/1, dry_run/1, current_state/1, state_token/1, desired/2, summary/1]).

-export_type([context/0, result/0, planned/0, steady/0]).

-type failure() :: bc_gitops_hold:failure().
-type repair() :: bc_gitops_hold:repair().

-type context() :: #{
    config := bc_gitops_config:config(),
    %% Whether someone asked for this reconcile (reconcile/0), rather than
    %% the timer.
    manual => boolean(),
    %% The last parse, reused while the commit does not change (absent in a
    %% steady run, which fetches it when it needs it).
    cache => parsed() | undefined,
    failures := #{atom() => failure()},
    repairs => #{atom() => repair()},
    %% What the last run planned against and its plan, made from `cache',
    %% when it applied nothing: the same parse against the same state plans
    %% the same, so the plan is reused when the state is unchanged.
    previous => planned(),
    %% Health gates a run cut short by a new commit left open.
    gates => [bc_gitops_gate:gate()],
    %% A steady run; and a pull already done (a steady run that goes on in
    %% full).
    steady => steady(),
    pulled => bc_gitops_git:outcome(),
    %% Cluster mode: the specs the coordinator assigned, instead of a pull;
    %% whether a newer assignment came; and the specs failed cluster-wide.
    given => parsed(),
    moved => fun(() -> boolean()),
    holds => #{atom() => bc_gitops_rollout:failure()},
    %% The pins, and where history entries go (the reconciler).
    pins => bc_gitops_pins:pins(),
    sink => pid()
}.

%% The runtime's token (see bc_gitops_runtime) taken before `current' was
%% read; `undefined' when it has none.
-type planned() :: #{current := #{atom() => #app_state{}}, plan := bc_gitops_plan:plan(),
                     token => term()}.

%% What a steady run is given instead of the parse and the state: the
%% commit and the runtime's token of the last run, its summary, and how to
%% get the parse (`cache') and the last plan (`previous') after all.
-type steady() :: #{commit := binary(), token := term(), summary := atom(),
                    fetch := fun(() -> #{cache := parsed(), previous => planned()})}.

-type parsed() :: #{commit := binary(), specs := [#app_spec{}],
                    errors := [bc_gitops_specs:diagnostic()],
                    warnings := [bc_gitops_specs:diagnostic()]}.

-type result() :: #{
    outcome := ok | {error, term()},
    %% `same': the context's, which a steady run was not given.
    cache := parsed() | undefined | same,
    %% A steady run found the commit and the runtime's token unchanged: the
    %% last result stands (then only `outcome' and `summary' are set).
    unchanged => true,
    summary => atom(),
    failures := #{atom() => failure()},
    repairs => #{atom() => repair()},
    blocked => [{atom(), bc_gitops_plan:block_reason()}],
    applied => [{bc_gitops_plan:action(), ok | {error, term()}}],
    waiting => [{atom(), term()}],
    current => #{atom() => #app_state{}},
    %% When nothing was applied: the plan and the state it was made from
    %% (then `current').
    planned => planned(),
    %% A new commit ended the run while health gates were open: those
    %% gates, for the next run to take over.
    superseded => boolean(),
    gates => [bc_gitops_gate:gate()],
    %% Apps whose health gate closed healthy in this run.
    healthy => [atom()],
    %% The pins git ended in this run (their app's spec changed).
    ended_pins => bc_gitops_pins:pins()
}.

%% @doc A full reconcile. Never raises: a failure of the whole run is
%% `outcome => {error, Reason}', and the previous parse is kept.
-spec run(context()) -> result().
run(#{config := Config, failures := Failures} = Ctx) ->
    Cache = maps:get(cache, Ctx, same),
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
                                        Meta#{status => summary(Result),
                                              commit => commit(Result, Ctx),
                                              changes => changes(Result)});
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
        {ok, plan(Parsed, Current, Config), Parsed}
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

%% @doc The runtime's state token (see {@link bc_gitops_runtime}), or
%% `undefined' when it has none, or it raised.
-spec state_token(module()) -> term().
state_token(Runtime) ->
    _ = code:ensure_loaded(Runtime),
    case erlang:function_exported(Runtime, state_token, 0) of
        true ->
            try Runtime:state_token()
            catch _:_ -> undefined
            end;
        false ->
            undefined
    end.

%% @doc What git says now: pull and parse (the parse of `Cache' is kept
%% while its commit is unchanged). For a cluster's coordinator.
-spec desired(bc_gitops_config:config(), parsed() | undefined) -> {ok, parsed()} | {error, term()}.
desired(Config, Cache) ->
    try
        {ok, parsed(Config, Cache, pull(Config), false)}
    catch
        throw:{step_failed, Reason} -> {error, Reason}
    end.

-spec steps(context()) -> result().
steps(#{steady := #{commit := Commit, token := Token, fetch := Fetch} = Steady,
        config := Config} = Ctx) ->
    Pulled = pull(Config),
    Same = case Pulled of
               #{commit := Commit, changed := false} ->
                   state_token(maps:get(runtime_module, Config)) =:= Token;
               _ ->
                   false
           end,
    case Same of
        true -> #{outcome => ok, unchanged => true, summary => maps:get(summary, Steady)};
        false -> steps(maps:merge(maps:remove(steady, Ctx), (Fetch())#{pulled => Pulled}))
    end;
steps(#{config := Config, cache := Cache, failures := Failures} = Ctx) ->
    Parsed = case Ctx of
                 #{given := Given} -> Given;
                 #{pulled := Pulled} -> parsed(Config, Cache, Pulled, map_size(Failures) > 0);
                 _ -> parsed(Config, Cache, pull(Config), map_size(Failures) > 0)
             end,
    Runtime = maps:get(runtime_module, Config),
    %% Taken before the state is read: a change in between gives the next
    %% run another token.
    Token = state_token(Runtime),
    Current = current_state(Runtime),
    Plan = case Ctx of
               #{cache := Parsed, previous := #{current := Current, plan := Same}} -> Same;
               _ -> plan(Parsed, Current, Config)
           end,
    #{actions := Planned0, blocked := Blocked} = Plan,
    {Pins, Ended} = bc_gitops_pins:expire(maps:get(pins, Ctx, #{}), Parsed),
    Planned = bc_gitops_pins:redirect(Planned0, Pins),
    {Actions, Failures0} = retry_unhealthy(Planned, Failures, Parsed),
    Gates = taken_over(maps:get(gates, Ctx, []), Actions, Parsed, Config),
    %% The specs of the last parse are what ran before: a rollback goes
    %% back to them.
    Previous = case {Actions, Cache} of
                   {[], _} -> #{};
                   {_, #{specs := Old}} -> maps:from_list([{S#app_spec.name, S} || S <- Old]);
                   {_, undefined} -> #{}
               end,
    Hold = bc_gitops_hold:new(Ctx#{failures => Failures0, pins => Pins}, Current),
    #{commit := Commit} = Parsed,
    #{applied := Applied, waiting := Waiting, hold := Hold1, gates := Open,
      healthy := Healthy, superseded := Superseded} =
        bc_gitops_apply:run(#{runtime => Runtime, config => Config, actions => Actions,
                              hold => Hold, previous => Previous, gates => Gates,
                              moved => maps:get(moved, Ctx, fun() -> moved(Config, Commit) end),
                              current => Current, history => history(Ctx, Commit)}),
    %% An app that has run for backoff_max since its last repair is
    %% trusted again: its repairs start over.
    Clock = maps:get(clock, Config),
    Acted = [bc_gitops_action:app(A) || A <- Actions],
    Repairs = bc_gitops_hold:forget_repairs(Acted, Clock:now_ms(), Hold1),
    Result = #{outcome => ok, cache => Parsed, failures => bc_gitops_hold:failures(Hold1),
               repairs => Repairs, blocked => Blocked, applied => Applied,
               waiting => Waiting ++ held_in_cluster(maps:get(holds, Ctx, #{}), Waiting),
               gates => Open, healthy => Healthy, superseded => Superseded, ended_pins => Ended},
    %% Nothing applied, nothing of ours changed: the state read for the plan
    %% is the state after.
    case {Applied, Gates} of
        {[], []} -> Result#{current => Current,
                            planned => #{current => Current, plan => Plan, token => Token}};
        _ -> Result#{current => current_state(Runtime)}
    end.

%% Where the run's history entries go, and what they say of it.
-spec history(context(), binary()) -> map().
history(#{config := Config} = Ctx, Commit) ->
    H = #{sink => maps:get(sink, Ctx, undefined), commit => Commit},
    case Config of
        #{cluster := #{}} -> H#{node => node()};
        _ -> H
    end.

%% A version failed for the whole cluster waits on every member, as a
%% version rolled back here does.
-spec held_in_cluster(#{atom() => bc_gitops_rollout:failure()}, [{atom(), term()}]) ->
    [{atom(), term()}].
held_in_cluster(Holds, Waiting) ->
    [{App, {rolled_back, V}} || {App, #{version := V}} <- lists:keysort(1, maps:to_list(Holds)),
                                not lists:keymember(App, 1, Waiting)].

%% The gates an earlier run left open go on, with their deadlines, for the
%% apps this run leaves alone whose spec is still the one being gated; an
%% app with a new action or a changed spec is gated again by that action,
%% if at all.
-spec taken_over([bc_gitops_gate:gate()], [bc_gitops_plan:action()], parsed(),
                 bc_gitops_config:config()) -> [bc_gitops_gate:gate()].
taken_over([], _Actions, _Parsed, _Config) ->
    [];
taken_over(Gates, Actions, #{specs := Specs}, Config) ->
    Acted = [bc_gitops_action:app(A) || A <- Actions],
    [bc_gitops_gate:reopen(G, Config)
     || G <- Gates,
        App <- [bc_gitops_gate:app(G)],
        not lists:member(App, Acted),
        lists:member(element(2, bc_gitops_gate:action(G)), Specs)].

%% Whether the branch has moved past `Commit': looked at while health
%% gates are open and a new reconcile is asked for. A git error is not a
%% move (the next reconcile reports it).
-spec moved(bc_gitops_config:config(), binary()) -> boolean().
moved(Config, Commit) ->
    try pull(Config) of
        #{commit := Commit} -> false;
        #{commit := _} -> true
    catch
        throw:{step_failed, _} -> false
    end.

%% An app deployed but never healthy runs at its desired version, so the
%% plan has nothing for it: it stays failed (its dependents wait) until its
%% check passes, and is deployed again once its backoff is over.
-spec retry_unhealthy([bc_gitops_plan:action()], #{atom() => failure()}, parsed()) ->
    {[bc_gitops_plan:action()], #{atom() => failure()}}.
retry_unhealthy(Actions, Failures, #{specs := Specs}) ->
    Planned = [bc_gitops_action:app(A) || A <- Actions],
    maps:fold(
      fun(App, #{reason := {unhealthy, _}, spec := Failed}, {As, Fs}) ->
              case {lists:member(App, Planned), bc_gitops_health_monitor:health(App),
                    lists:member(Failed, Specs)} of
                  {false, healthy, _} -> {As, maps:remove(App, Fs)};
                  {false, _, true} -> {[{redeploy, Failed, unhealthy} | As], Fs};
                  _ -> {As, Fs}
              end;
         (_App, _Failure, Acc) ->
              Acc
      end, {Actions, Failures}, Failures).

-spec pull(bc_gitops_config:config()) -> bc_gitops_git:outcome().
pull(Config) ->
    Start = erlang:monotonic_time(),
    %% The gitops checkout is watched: a pull that finds the same commit
    %% then does not stat each spec file (see bc_gitops_git).
    case bc_gitops_git:sync((bc_gitops_config:repo_git_options(Config))#{watch => true}) of
        {ok, #{commit := Commit, changed := Changed} = Out} ->
            Meta = #{repo => bc_gitops_nif:redact_url(maps:get(repo_url, Config)),
                     branch => maps:get(branch, Config), commit => Commit},
            bc_gitops_telemetry:execute(
              [bc_gitops, git, pull], #{duration => erlang:monotonic_time() - Start},
              Meta#{changed => Changed, healed => maps:get(healed, Out)}),
            ok = verified(Out, Meta),
            Out;
        {error, Reason} ->
            throw({step_failed, {git, Reason}})
    end.

%% With `verify', a commit without a good signature of an allowed key is
%% not used at all: the run fails before the parse, so nothing of it is
%% applied and the node keeps what it runs (its checkout stays, for
%% inspection).
-spec verified(bc_gitops_git:outcome(), map()) -> ok.
verified(#{verified := #{result := Result, duration_us := Us} = Verified, commit := Commit},
         Meta) ->
    bc_gitops_telemetry:execute(
      [bc_gitops, verify, stop],
      #{duration => erlang:convert_time_unit(Us, microsecond, native)},
      Meta#{result => Result, signer => maps:get(signer, Verified, undefined)}),
    case Result of
        ok -> ok;
        {error, Why} -> throw({step_failed, {unverified_commit, Commit, Why}})
    end;
verified(_Out, _Meta) ->
    ok.

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

-spec plan(parsed(), #{atom() => #app_state{}}, bc_gitops_config:config()) ->
    bc_gitops_plan:plan().
plan(#{specs := Specs, errors := Errors}, Current, Config) ->
    {ok, Plan} = bc_gitops_plan:plan(Specs, Current, [A || #{app := A} <- Errors],
                                     maps:with([age_identity], Config)),
    Plan.

%% The commit a run reconciled to: a steady run that found nothing
%% changed was given it.
-spec commit(result(), context()) -> binary().
commit(#{unchanged := true}, #{steady := #{commit := Commit}}) -> Commit;
commit(#{cache := #{commit := Commit}}, _Ctx) -> Commit.

%% What a run changed, or tried to, app by app, for the stop event.
-spec changes(result()) -> [#{app := atom(), action := atom(), from := binary() | undefined,
                              to := binary() | undefined, reason => atom(),
                              result := ok | {error, term()}}].
changes(#{applied := Applied}) ->
    [change(Action, Result) || {Action, Result} <- Applied];
changes(#{unchanged := true}) ->
    [].

-spec change(bc_gitops_plan:action(), ok | {error, term()}) -> map().
change({remove, App}, Result) ->
    #{app => App, action => remove, from => undefined, to => undefined, result => Result};
change({upgrade, #app_spec{name = App, version = V}, From}, Result) ->
    #{app => App, action => upgrade, from => From, to => V, result => Result};
change({redeploy, #app_spec{name = App, version = V}, Why}, Result) ->
    #{app => App, action => redeploy, from => V, to => V, reason => Why, result => Result};
change({Kind, #app_spec{name = App, version = V}}, Result) ->
    #{app => App, action => Kind, from => undefined, to => V, result => Result}.

%% @doc How a run ended: `synced', or `out_of_sync' when an action failed
%% or waits, an app is blocked or a spec has errors.
-spec summary(result()) -> atom().
summary(#{unchanged := true, summary := Summary}) ->
    Summary;
summary(#{applied := Applied, waiting := Waiting, blocked := Blocked, cache := Parsed}) ->
    Failed = [A || {A, {error, _}} <- Applied],
    case {Failed, Waiting, Blocked, maps:get(errors, Parsed)} of
        {[], [], [], []} -> synced;
        _ -> out_of_sync
    end.
