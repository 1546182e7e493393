%%% @doc A cluster member's own record: what the coordinator assigned to
%%% this node, which of it has settled, and what the member reports.
%%%
%%% A member never reads git for its apps: the coordinator hands it the
%%% specs to run (an assignment, changed by deltas), and the member's
%%% reconciler converges the node to them as it would to a commit. A spec
%%% has settled on the member when its action succeeded and the app runs
%%% at it (healthy within `health_grace' when it has a health check); the
%%% settled spec and the one before it are kept, so that a revert goes back
%%% to exactly what ran. Both are persisted with the node's state.
-module(bc_gitops_member).

-include("bc_gitops.hrl").

-export([new/0, assign/3, parsed/1, settle/3, report/4, commit/1, holds/1, pins/1,
         pins_gen/1, previous/2]).

-export_type([assignment/0, settled/0, delta/0, report/0]).

-type digest() :: bc_gitops_rollout:digest().

-type assignment() :: #{commit := binary() | undefined,
                        specs := #{atom() => #app_spec{}},
                        %% Target specs failed for the whole cluster, with why.
                        holds := #{atom() => bc_gitops_rollout:failure()},
                        %% The cluster's pins (kept here so that a coordinator
                        %% that takes over learns them from the reports).
                        pins => bc_gitops_pins:pins(), pins_gen => non_neg_integer(),
                        errors := list(), warnings := list(),
                        %% The last delta taken in.
                        ack := reference() | undefined}.

%% By app: the spec that settled, and the one that had settled before.
-type settled() :: #{atom() => {#app_spec{}, #app_spec{} | undefined}}.

%% A change from the coordinator: specs to set (or remove), apps to revert
%% from a failed spec, and the cluster-wide holds, pins, commit and
%% diagnostics.
-type delta() :: #{ref := reference(), commit := binary(),
                   set := #{atom() => #app_spec{} | remove},
                   revert := #{atom() => digest()},
                   holds := #{atom() => bc_gitops_rollout:failure()},
                   pins => bc_gitops_pins:pins(), pins_gen => non_neg_integer(),
                   errors := list(), warnings := list()}.

-type report() :: #{node := node(), ack := reference() | undefined,
                    commit := binary() | undefined, busy := boolean(),
                    holds := #{atom() => bc_gitops_rollout:failure()},
                    pins => bc_gitops_pins:pins(), pins_gen => non_neg_integer(),
                    apps := #{atom() => bc_gitops_rollout:app_report()}}.

%% @doc Nothing assigned yet: the member does not touch the node.
-spec new() -> assignment().
new() ->
    #{commit => undefined, specs => #{}, holds => #{}, pins => #{}, errors => [],
      warnings => [], ack => undefined}.

-spec commit(assignment()) -> binary() | undefined.
commit(#{commit := C}) -> C.

-spec holds(assignment()) -> #{atom() => bc_gitops_rollout:failure()}.
holds(#{holds := H}) -> H.

%% @doc The cluster's pins, as the last delta had them (none in an
%% assignment kept before pins existed).
-spec pins(assignment()) -> bc_gitops_pins:pins().
pins(A) -> maps:get(pins, A, #{}).

%% @doc The generation of those pins (0: none ever).
-spec pins_gen(assignment()) -> non_neg_integer().
pins_gen(A) -> maps:get(pins_gen, A, 0).

%% @doc Takes a delta in. A revert of `App' from the failed spec `Digest'
%% applies only while `App' is still assigned that spec: it goes back to
%% the spec that settled before it (or leaves, when none had).
-spec assign(delta(), assignment(), settled()) -> assignment().
assign(#{ref := Ref, commit := Commit, set := Set, revert := Revert, holds := Holds,
         errors := Errors, warnings := Warnings} = Delta, #{specs := Specs0} = A, Settled) ->
    Specs1 = maps:fold(fun(App, remove, S) -> maps:remove(App, S);
                          (App, Spec, S) -> S#{App => Spec}
                       end, Specs0, Set),
    Specs2 = maps:fold(fun(App, Digest, S) -> revert(App, Digest, S, Settled) end, Specs1, Revert),
    A#{commit := Commit, specs := Specs2, holds := Holds, errors := Errors,
       warnings := Warnings, ack := Ref, pins => maps:get(pins, Delta, pins(A)),
       pins_gen => maps:get(pins_gen, Delta, pins_gen(A))}.

-spec revert(atom(), digest(), #{atom() => #app_spec{}}, settled()) -> #{atom() => #app_spec{}}.
revert(App, Digest, Specs, Settled) ->
    case bc_gitops_rollout:digest(maps:get(App, Specs, undefined)) of
        Digest ->
            Back = case maps:find(App, Settled) of
                       {ok, {Current, Before}} ->
                           case bc_gitops_rollout:digest(Current) of
                               Digest -> Before;
                               _ -> Current
                           end;
                       error ->
                           undefined
                   end,
            case Back of
                undefined -> maps:remove(App, Specs);
                _ -> Specs#{App => Back}
            end;
        _ ->
            Specs
    end.

%% @doc The spec `App' settled at last on this member, and the one that
%% had settled before it (`undefined' when none had): what a rollback goes
%% back to. `error' when it never settled here.
-spec previous(atom(), settled()) -> {ok, {#app_spec{}, #app_spec{} | undefined}} | error.
previous(App, Settled) ->
    maps:find(App, Settled).

%% @doc The assignment as a parse, for the member's reconcile.
-spec parsed(assignment()) -> map().
parsed(#{commit := Commit, specs := Specs, errors := Errors, warnings := Warnings}) ->
    #{commit => Commit, specs => [S || {_, S} <- lists:keysort(1, maps:to_list(Specs))],
      errors => Errors, warnings => Warnings}.

%% @doc What settled in a reconcile of the assignment (`Result' is the
%% pass's): every assigned app that was not held, did not fail, has no
%% gate still open, and runs at its spec's version. An app no longer
%% assigned and no longer on the node is forgotten.
-spec settle(map(), assignment(), settled()) -> settled().
settle(#{outcome := ok, current := Current} = Result, #{specs := Specs}, Settled) ->
    Unsettled = [App || {App, _} <- maps:get(waiting, Result, [])]
        ++ [App || {App, _} <- maps:get(blocked, Result, [])]
        ++ [bc_gitops_action:app(A) || {A, {error, _}} <- maps:get(applied, Result, [])]
        ++ [bc_gitops_gate:app(G) || G <- maps:get(gates, Result, [])],
    Kept = maps:filter(fun(App, _) -> maps:is_key(App, Specs) orelse maps:is_key(App, Current)
                       end, Settled),
    maps:fold(
      fun(App, #app_spec{version = V} = Spec, Acc) ->
              Runs = case Current of
                         #{App := #app_state{version = V, status = running}} -> true;
                         _ -> false
                     end,
              case Runs andalso not lists:member(App, Unsettled) of
                  false -> Acc;
                  true ->
                      case maps:find(App, Acc) of
                          {ok, {Spec, _}} -> Acc;
                          {ok, {Old, _}} -> Acc#{App => {Spec, Old}};
                          error -> Acc#{App => {Spec, undefined}}
                      end
              end
      end, Kept, Specs);
settle(_Result, _Assignment, Settled) ->
    Settled.

%% @doc The member's report: per app the assigned, settled and failed
%% specs (as digests), and what the runtime says (version, status,
%% health); `Failures' are its reconciler's, `Current' the node's state.
-spec report(assignment(), settled(), #{atom() => bc_gitops_hold:failure()},
             #{atom() => #app_state{}}) -> #{atom() => bc_gitops_rollout:app_report()}.
report(#{specs := Specs}, Settled, Failures, Current) ->
    Apps = lists:usort(maps:keys(Specs) ++ maps:keys(Settled) ++ maps:keys(Current)),
    maps:from_list(
      [{App, app_report(App, Specs, Settled, Failures, Current)} || App <- Apps]).

-spec app_report(atom(), #{atom() => #app_spec{}}, settled(),
                 #{atom() => bc_gitops_hold:failure()}, #{atom() => #app_state{}}) ->
    bc_gitops_rollout:app_report().
app_report(App, Specs, Settled, Failures, Current) ->
    Digest = fun bc_gitops_rollout:digest/1,
    Settle = case maps:find(App, Settled) of
                 {ok, {S, _}} -> Digest(S);
                 error -> none
             end,
    {Failed, Reason} = case maps:find(App, Failures) of
                           {ok, #{spec := FS, reason := R}} when FS =/= undefined -> {Digest(FS), R};
                           _ -> {none, undefined}
                       end,
    State = maps:get(App, Current, undefined),
    #{assigned => Digest(maps:get(App, Specs, undefined)), settled => Settle,
      failed => Failed, reason => Reason,
      version => case State of #app_state{version = V} -> V; _ -> undefined end,
      status => case State of #app_state{status = St} -> St; _ -> absent end,
      health => case State of
                    #app_state{} -> bc_gitops_status:health(State);
                    _ -> unknown
                end}.
