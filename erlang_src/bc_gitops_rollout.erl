%%% @doc Rolling changes across a cluster: what the coordinator does next.
%%%
%%% Pure functions over what the members report, so that any member that
%%% becomes coordinator works out where each rollout stands from what the
%%% members run, and goes on from there.
%%%
%%% For each app, every member is, with respect to the spec it should run
%%% there (the target spec where the app's placement matches the member,
%%% else none: the app leaves):
%%% <ul>
%%% <li>`done': it settled at that spec (deployed or upgraded, and healthy
%%%     within `health_grace' when the spec has a health check);</li>
%%% <li>`failed': it tried that spec and it failed (its own reconcile rolled
%%%     it back);</li>
%%% <li>`current': it was assigned a spec it has not settled yet (a batch in
%%%     progress, towards this target or an older one);</li>
%%% <li>`pending': it settled at another spec, and waits for its batch;</li>
%%% <li>`down': not reachable.</li>
%%% </ul>
%%% A rollout starts a batch of at most `max_parallel' pending members (in
%%% the order of `members': the first batch is the canary) only when no
%%% member of that app is `current', the coordinator has a quorum, the
%%% `pause' after the last batch is over, and on each member of the batch
%%% the app's dependencies already settled at their own target. A member
%%% that fails halts the rollout: the target spec is marked failed for the
%%% whole cluster, every member assigned it is told to revert, and no batch
%%% starts until the spec changes.
-module(bc_gitops_rollout).

-include("bc_gitops.hrl").

-export([digest/1, decide/2, settings/2]).

-export_type([digest/0, app_report/0, view/0, rollout/0, command/0, event/0, failure/0]).

%% A spec's fingerprint, or `none' for "not there".
-type digest() :: binary() | none.

%% A target spec that failed on a member, marked failed for the cluster.
-type failure() :: #{digest := digest(), version := binary() | undefined, reason := term()}.

%% What a member reports of one app.
-type app_report() :: #{assigned := digest(), settled := digest(), failed := digest(),
                        reason => term(), version => binary() | undefined,
                        status => atom(), health => atom()}.

-type view() :: #{members := [node()],
                  up := [node()],
                  quorum := boolean(),
                  %% The spec each member should run, by app.
                  wants := #{node() => #{atom() => #app_spec{}}},
                  %% Apps not to touch anywhere (invalid or blocked spec).
                  keep := [atom()],
                  reports := #{node() => #{atom() => app_report()}},
                  %% Target specs marked failed for the whole cluster.
                  failed := #{atom() => failure()},
                  now := integer(),
                  max_parallel := pos_integer()}.

-type rollout() :: #{app := atom(), from := binary() | undefined, to := binary() | undefined,
                     target := digest(), done := [node()], current := [node()],
                     pending := [node()], state := running | halted | done, reason := term(),
                     batch := [node()], pause_until := integer()}.

%% `{set, Node, App, Spec | remove}': assign; `{revert, Node, App,
%% Digest}': go back from the failed spec `Digest' to what ran before.
-type command() :: {set, node(), atom(), #app_spec{} | remove} | {revert, node(), atom(), digest()}.

-type event() :: {start | stop | step, atom(), map()}.

%% @doc The fingerprint of a spec: the same on every node for equal specs.
-spec digest(#app_spec{} | remove | undefined) -> digest().
digest(#app_spec{} = Spec) -> erlang:md5(term_to_binary(Spec, [deterministic, {minor_version, 2}]));
digest(_) -> none.

%% @doc A spec's `max_parallel' and `pause' (its `rollout' map over the
%% cluster's `max_parallel' and a pause of 0).
-spec settings(#app_spec{} | undefined, pos_integer()) -> {pos_integer(), non_neg_integer()}.
settings(#app_spec{rollout = #{} = R}, Default) ->
    {maps:get(max_parallel, R, Default), maps:get(pause, R, 0)};
settings(_Spec, Default) ->
    {Default, 0}.

%% @doc The next steps: commands for members, the rollouts as they stand,
%% telemetry events, the specs marked failed, and when to look again
%% (a pause that ends), if ever.
-spec decide(view(), #{atom() => rollout()}) ->
    {[command()], #{atom() => rollout()}, [event()], #{atom() => failure()}, integer() | infinity}.
decide(#{wants := Wants, reports := Reports, keep := Keep} = View, Rollouts) ->
    Apps = lists:usort([A || W <- maps:values(Wants), A <- maps:keys(W)]
                       ++ [A || R <- maps:values(Reports), A <- maps:keys(R)]) -- Keep,
    lists:foldl(
      fun(App, {Cmds, Rs, Evs, Failed, Wake}) ->
              {C, R, E, F, W} = app(App, View#{failed := Failed}, maps:get(App, Rollouts, none)),
              {Cmds ++ C, put_rollout(App, R, Rs), Evs ++ E, F, min(Wake, W)}
      end, {[], maps:with(Keep, Rollouts), [], maps:get(failed, View), infinity}, Apps).

-spec put_rollout(atom(), rollout() | none, #{atom() => rollout()}) -> #{atom() => rollout()}.
put_rollout(_App, none, Rs) -> Rs;
put_rollout(App, R, Rs) -> Rs#{App => R}.

%% One app.
-spec app(atom(), view(), rollout() | none) ->
    {[command()], rollout() | none, [event()], #{atom() => failure()}, integer() | infinity}.
app(App, #{members := Members, wants := Wants, failed := Failed0} = View, Old) ->
    Spec = target_spec(App, Wants),
    Target = digest(Spec),
    Want = fun(Node) -> digest(maps:get(App, maps:get(Node, Wants, #{}), undefined)) end,
    Classes = [{Node, class(Node, App, Want(Node), View)} || Node <- Members],
    Of = fun(Class) -> [N || {N, {C, _}} <- Classes, C =:= Class] end,
    %% A failure of this target on any member marks it failed everywhere.
    Failed = case {Of(failed), Failed0} of
                 {_, #{App := #{digest := Target}}} ->
                     Failed0;
                 {[F | _], _} ->
                     Failed0#{App => #{digest => Target, version => version(Spec),
                                       reason => reason_of(F, Classes)}};
                 {[], _} ->
                     maps:remove(App, Failed0)
             end,
    Base = #{app => App, to => version(Spec), target => Target, done => Of(done),
             current => Of(current), pending => Of(pending)},
    case maps:find(App, Failed) of
        {ok, #{digest := Target, reason := Why}} ->
            halted(App, Base, Why, Classes, View, Old, Failed);
        _ ->
            rolling(App, Spec, Base, Of, View, Old, Failed)
    end.

%% The spec members should run, from any member that should run it (it is
%% the same spec on all of them; placement only says where).
-spec target_spec(atom(), #{node() => #{atom() => #app_spec{}}}) -> #app_spec{} | undefined.
target_spec(App, Wants) ->
    case [S || W <- maps:values(Wants), #{App := S} <- [W]] of
        [S | _] -> S;
        [] -> undefined
    end.

-spec version(#app_spec{} | undefined) -> binary() | undefined.
version(#app_spec{version = V}) -> V;
version(undefined) -> undefined.

-spec class(node(), atom(), digest(), view()) -> {atom(), app_report()}.
class(Node, App, Want, #{up := Up, reports := Reports}) ->
    R = maps:get(App, maps:get(Node, Reports, #{}),
                 #{assigned => none, settled => none, failed => none}),
    #{assigned := Assigned, settled := Settled, failed := FailedD} = R,
    Class = case lists:member(Node, Up) of
                false -> down;
                true when FailedD =:= Want, Want =/= none, Settled =/= Want -> failed;
                true when Assigned =/= Settled -> current;
                true when Settled =:= Want -> done;
                true -> pending
            end,
    {Class, R}.

-spec reason_of(node(), [{node(), {atom(), app_report()}}]) -> term().
reason_of(Node, Classes) ->
    {_, R} = proplists:get_value(Node, Classes),
    maps:get(reason, R, failed).

%% The target failed: members assigned it go back; no batch starts.
-spec halted(atom(), map(), term(), [{node(), {atom(), app_report()}}], view(),
             rollout() | none, #{atom() => failure()}) ->
    {[command()], rollout(), [event()], #{atom() => failure()}, infinity}.
halted(App, #{target := Target} = Base, Why, Classes, _View, Old, Failed) ->
    Revert = [N || {N, {C, #{assigned := A}}} <- Classes, C =/= down, A =:= Target],
    Rollout = maps:merge(defaults(Old, Classes, App),
                         Base#{state => halted, reason => Why, batch => []}),
    Events = case Old of
                 #{state := halted, target := Target} -> [];
                 _ -> [{stop, App, #{from => maps:get(from, Rollout), to => maps:get(to, Base),
                                     nodes => maps:get(done, Base) ++ maps:get(current, Base),
                                     result => {halted, Why}}}]
             end,
    {[{revert, N, App, Target} || N <- Revert], Rollout, Events, Failed, infinity}.

%% No failure: wait for the batch in progress, or start the next one.
-spec rolling(atom(), #app_spec{} | undefined, map(), fun((atom()) -> [node()]), view(),
              rollout() | none, #{atom() => failure()}) ->
    {[command()], rollout() | none, [event()], #{atom() => failure()}, integer() | infinity}.
rolling(App, Spec, #{target := Target} = Base, Of, View, Old0, Failed) ->
    #{now := Now, quorum := Quorum, max_parallel := Default} = View,
    %% A rollout of an older target is over: this one starts afresh.
    Old = case Old0 of
              #{target := Target} -> Old0;
              _ -> none
          end,
    Current = Of(current),
    Pending = Of(pending),
    {MaxParallel, Pause} = settings(Spec, Default),
    Batch = case Old of #{batch := B} -> B; none -> [] end,
    From = case Old of
               #{from := F} -> F;
               none -> from(App, Pending ++ Current, View)
           end,
    Versions = #{from => From, to => version(Spec)},
    %% The batch in progress ended: its pause starts now.
    {PauseUntil, Ended} =
        case {Batch, Current -- (Current -- Batch)} of
            {[_ | _], []} -> {Now + Pause, [{step, App, Versions#{nodes => Batch,
                                                                   result => done}}]};
            _ when Old =:= none, Pending =/= [] ->
                %% Taken over mid-rollout (some done, some pending): the
                %% soak time is counted again rather than skipped.
                {case Of(done) of [] -> Now; _ -> Now + Pause end, []};
            _ when Old =:= none -> {Now, []};
            _ -> {maps:get(pause_until, Old), []}
        end,
    Rollout0 = Base#{from => From, state => running, reason => undefined, batch => [],
                     pause_until => PauseUntil},
    if
        Current =/= [] ->
            R = Rollout0#{batch => [N || N <- Batch, lists:member(N, Current)]},
            {[], R, Ended, Failed, infinity};
        Pending =:= [] ->
            Events = case Old of
                         #{state := running} ->
                             [{stop, App, Versions#{nodes => Of(done), result => done}}];
                         _ -> []
                     end,
            R = case {Old, Of(done)} of
                    {none, _} -> none;
                    _ -> Rollout0#{state => done}
                end,
            {[], R, Ended ++ Events, Failed, infinity};
        not Quorum ->
            {[], Rollout0#{reason => no_quorum}, Ended, Failed, infinity};
        Now < PauseUntil ->
            {[], Rollout0#{reason => pause}, Ended, Failed, PauseUntil};
        true ->
            case [N || N <- Pending, deps_ready(N, Spec, View)] of
                [] ->
                    [Dep | _] = waiting_deps(hd(Pending), Spec, View),
                    {[], Rollout0#{reason => {dependency_not_ready, Dep}}, Ended, Failed,
                     infinity};
                Ready ->
                    Next = lists:sublist(Ready, MaxParallel),
                    Set = fun(N) -> maps:get(App, maps:get(N, maps:get(wants, View), #{}), remove)
                          end,
                    Start = case Old of
                                none -> [{start, App, Versions#{nodes => Pending ++ Of(done)}}];
                                _ -> []
                            end,
                    Step = {step, App, Versions#{nodes => Next, result => started}},
                    {[{set, N, App, Set(N)} || N <- Next], Rollout0#{batch => Next},
                     Ended ++ Start ++ [Step], Failed, infinity}
            end
    end.

-spec defaults(rollout() | none, list(), atom()) -> map().
defaults(#{} = Old, _Classes, _App) -> maps:with([from, pause_until], Old);
defaults(none, _Classes, _App) -> #{from => undefined, pause_until => 0}.

%% The version most members still to change run (for display).
-spec from(atom(), [node()], view()) -> binary() | undefined.
from(App, Nodes, #{reports := Reports}) ->
    case [V || N <- Nodes, #{App := #{version := V}} <- [maps:get(N, Reports, #{})],
               V =/= undefined] of
        [] -> undefined;
        [V | _] -> V
    end.

%% On `Node', every dependency of the app that should run there has
%% settled at its target.
-spec deps_ready(node(), #app_spec{} | undefined, view()) -> boolean().
deps_ready(Node, Spec, View) ->
    waiting_deps(Node, Spec, View) =:= [].

-spec waiting_deps(node(), #app_spec{} | undefined, view()) -> [atom()].
waiting_deps(_Node, undefined, _View) ->
    [];
waiting_deps(Node, #app_spec{depends_on = Deps}, #{wants := Wants, reports := Reports}) ->
    Want = maps:get(Node, Wants, #{}),
    Report = maps:get(Node, Reports, #{}),
    [D || D <- Deps, #{D := DSpec} <- [Want],
          maps:get(settled, maps:get(D, Report, #{}), none) =/= digest(DSpec)].
