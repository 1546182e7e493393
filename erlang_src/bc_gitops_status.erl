%%% @doc What `bc_gitops:status/0' says, made from the reconciler's facts:
%%% the node's status name, the counts, and each reason an app waits or
%%% failed. Pure but for the health monitor, the progress table and the
%%% guests it reads; the reconciler hands it what it knows.
-module(bc_gitops_status).

-include("bc_gitops.hrl").

-export([view/1, health/1]).

-export_type([facts/0]).

%% What the reconciler knows: its config, its last result (`last') and
%% parse (`cache'), the job running (`none' when idle), and the holds.
-type facts() :: #{config := bc_gitops_config:config(), last := map(),
                   cache := undefined | map(), running := none | term(),
                   suspended := boolean(), last_commit := undefined | binary(),
                   last_at := undefined | integer(), pins := bc_gitops_pins:pins(),
                   failures := #{atom() => bc_gitops_hold:failure()},
                   repairs := #{atom() => bc_gitops_hold:repair()}, now := integer()}.

%% @doc The status map of `bc_gitops:status/0' (but `cluster').
-spec view(facts()) -> map().
view(#{config := Config, last := Last, cache := Cache, now := Now} = Facts) ->
    Specs = case Cache of undefined -> []; #{specs := S} -> S end,
    Current = maps:get(current, Last, #{}),
    Managed = [S#app_state{health = health(S)} || S <- maps:values(Current)],
    Healthy = [S || #app_state{health = healthy} = S <- Managed],
    #{status => name(Facts, length(Healthy) =:= length(Managed)),
      suspended => maps:get(suspended, Facts),
      repo => case maps:get(repo_url, Config) of
                  undefined -> undefined;
                  Url -> bc_gitops_nif:redact_url(Url)
              end,
      branch => maps:get(branch, Config),
      last_commit => maps:get(last_commit, Facts),
      last_reconcile => maps:get(last_at, Facts),
      last_error => case maps:get(outcome, Last, ok) of ok -> undefined; {error, E} -> E end,
      app_count => length(Specs),
      healthy_count => length(Healthy),
      spec_errors => case Cache of undefined -> []; #{errors := Es} -> Es end,
      spec_warnings => case Cache of undefined -> []; #{warnings := Ws} -> Ws end,
      blocked => maps:get(blocked, Last, []),
      %% A pin is a standing reason to wait, shown whether or not it held
      %% an action back at the last reconcile.
      waiting => waiting(maps:get(waiting, Last, []), maps:get(pins, Facts)),
      pins => bc_gitops_pins:view(maps:get(pins, Facts)),
      app_errors => app_errors(maps:get(failures, Facts), Now),
      in_progress => bc_gitops_progress:list(),
      repairs => repairs(maps:get(repairs, Facts), Now),
      guests => bc_gitops_vm:guests()}.

%% @doc An app's health: its last check when it has a health spec,
%% else healthy when it runs.
-spec health(#app_state{}) -> healthy | unhealthy | unknown.
health(#app_state{name = App, status = Status}) ->
    case {Status, bc_gitops_health_monitor:health(App)} of
        {running, no_check} -> healthy;
        {running, healthy} -> healthy;
        {running, unknown} -> unknown;
        _ -> unhealthy
    end.

%%% Internals

-spec waiting([{atom(), term()}], bc_gitops_pins:pins()) -> [{atom(), term()}].
waiting(Waiting, Pins) ->
    Waiting ++ [{App, {pinned, V}} || {App, #{version := V}} <- lists:keysort(1, maps:to_list(Pins)),
                                      not lists:keymember(App, 1, Waiting)].

-spec name(facts(), boolean()) -> atom().
name(#{running := reconcile}, _) -> reconciling;
name(#{config := #{repo_url := undefined}}, _) -> idle;
name(#{last := Last, failures := Failures, cache := Cache}, AllHealthy) ->
    Errors = case Cache of undefined -> []; #{errors := Es} -> Es end,
    case maps:get(outcome, Last, none) of
        none -> out_of_sync;
        {error, _} -> error;
        ok ->
            InSync = maps:get(blocked, Last, []) =:= [] andalso maps:get(waiting, Last, []) =:= []
                andalso map_size(Failures) =:= 0 andalso Errors =:= [],
            if
                not InSync -> out_of_sync;
                not AllHealthy -> degraded;
                true -> synced
            end
    end.

%% Apps repaired at the last reconciles in a row: how often, what was
%% repaired, and how long until the next repair may be done.
-spec repairs(#{atom() => bc_gitops_hold:repair()}, integer()) -> #{atom() => map()}.
repairs(Repairs, Now) ->
    maps:map(fun(_, #{count := N, retry_at := At, reason := R}) ->
                     #{count => N, reason => R, retry_in_ms => max(0, At - Now)}
             end, Repairs).

-spec app_errors(#{atom() => bc_gitops_hold:failure()}, integer()) -> #{atom() => map()}.
app_errors(Failures, Now) ->
    maps:map(fun(_, #{attempts := N, retry_at := At, reason := R, version := V}) ->
                     #{attempts => N, reason => R, version => V,
                       retry_in_ms => max(0, At - Now)}
             end, Failures).
