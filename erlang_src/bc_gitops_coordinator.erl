%%% @doc The cluster's coordinator: one at a time, registered with
%%% `global' under a name derived from the cluster's members and
%%% repository, so that another cluster's nodes never clash with it.
%%%
%%% It alone reads git: it pulls and parses the gitops repository (in a
%%% worker process, so it always answers), works out which spec each member
%%% should run (placement), and rolls every change out one batch at a time
%%% ({@link bc_gitops_rollout}) by sending each member deltas of its
%%% assignment. The members converge their own nodes and report back; the
%%% state of every rollout is worked out again from those reports at each
%%% step, so a coordinator that takes over goes on from where the last one
%%% stood. Without a majority of `members' reachable it sends nothing: one
%%% side of a partition never fights the other.
%%%
%%% Only nodes of `members' take part: a report from another node is
%%% ignored (and logged once), and nothing is ever sent to one.
-module(bc_gitops_coordinator).

-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").
-include("bc_gitops.hrl").

-export([start_link/1, name/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, format_status/1]).
-export([refresh/2]).

-record(st, {
    config :: bc_gitops_config:config(),
    members :: [node()],
    %% The last parse of the target commit, and what it means per member.
    target :: map() | undefined,
    wants = #{} :: #{node() => #{atom() => #app_spec{}}},
    keep = [] :: [atom()],
    refresh_error :: term(),
    reports = #{} :: #{node() => bc_gitops_member:report()},
    %% Deltas sent and not yet acknowledged by a report, per member.
    unacked = #{} :: #{node() => [{reference(), bc_gitops_member:delta()}]},
    rollouts = #{} :: #{atom() => bc_gitops_rollout:rollout()},
    failed = #{} :: #{atom() => bc_gitops_rollout:failure()},
    %% Apps held at a spec (rollback/1, pin/1) until git changes theirs,
    %% and the generation of that map: each change makes a higher one, and
    %% a report with a higher one (a coordinator before this one changed
    %% them) is taken as the pins, whole.
    pins = #{} :: bc_gitops_pins:pins(),
    pins_gen = 0 :: non_neg_integer(),
    worker :: {pid(), reference(), integer()} | undefined,
    %% Refreshes asked for (a reconcile, the interval) and done.
    asked = 0 :: non_neg_integer(),
    loaded = 0 :: non_neg_integer(),
    waiters = [] :: [{gen_server:from(), reconcile | plan, node(), non_neg_integer()}],
    timer :: reference() | undefined,
    wake :: {integer(), reference()} | undefined,
    ignored = [] :: [node()]
}).

%% @doc Starts a coordinator if none is registered: `ignore' when another
%% one is.
-spec start_link(bc_gitops_config:config()) -> {ok, pid()} | ignore | {error, term()}.
start_link(Config) ->
    gen_server:start_link(?MODULE, Config, []).

%% @doc The coordinator's global name for this configuration.
-spec name(bc_gitops_config:config()) -> {?MODULE, integer()}.
name(#{cluster := #{members := Members}, repo_url := Url, branch := Branch, apps_dir := Dir}) ->
    {?MODULE, erlang:phash2({lists:usort(Members), Url, Branch, Dir})}.

%%% gen_server

%% @private
-spec init(bc_gitops_config:config()) -> {ok, #st{}} | ignore.
init(#{cluster := #{members := Members}} = Config) ->
    case global:register_name(name(Config), self(), fun global:random_notify_name/3) of
        yes ->
            ok = net_kernel:monitor_nodes(true),
            ?LOG_NOTICE("bc_gitops: ~p coordinates the cluster", [node()]),
            St = #st{config = Config, members = Members},
            _ = [ask_report(N) || N <- up(St)],
            {ok, refresh(St)};
        no ->
            ignore
    end.

%% @private
-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}} | {noreply, #st{}}.
handle_call({Kind, Node}, From, #st{asked = Asked, worker = Worker} = St)
  when Kind =:= reconcile; Kind =:= plan ->
    %% The answer comes from a parse that starts after the question.
    Needed = case Worker of
                 undefined -> Asked + 1;
                 {_, _, Gen} -> Gen + 1
             end,
    St1 = St#st{waiters = [{From, Kind, Node, Needed} | St#st.waiters]},
    {noreply, answer(refresh(St1))};
handle_call(status, _From, St) ->
    {reply, {ok, cluster_status(St)}, St};
handle_call({settled_at, App, Reason}, _From, St) ->
    {reply, settled_at(App, Reason, St), St};
handle_call({pin, App, #app_spec{version = V} = Running, Reason, Digest}, _From, St) ->
    %% What the asker read must still be what the cluster runs.
    case settled_at(App, Reason, St) of
        {ok, _Nodes, Digest} ->
            #{specs := Specs} = St#st.target,
            #app_spec{} = Git = lists:keyfind(App, #app_spec.name, Specs),
            ?LOG_NOTICE("bc_gitops: ~p pinned at ~ts (~p)", [App, V, Reason]),
            Pins = bc_gitops_pins:pin(App, V, Running, Reason, Git, St#st.pins),
            {reply, ok, answer(step(retarget(set_pins(Pins, St))))};
        {ok, _Nodes, _Moved} ->
            {reply, {error, {rollout_in_progress, App}}, St};
        Error ->
            {reply, Error, St}
    end;
handle_call({unpin, App}, _From, #st{pins = Pins} = St) ->
    case {quorum(St), bc_gitops_pins:unpin(App, Pins)} of
        {false, _} -> {reply, {error, {no_quorum, reporting(St), St#st.members}}, St};
        {true, {ok, Pins1}} -> {reply, ok, answer(step(retarget(set_pins(Pins1, St))))};
        {true, Error} -> {reply, Error, St}
    end;
handle_call(_Other, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast({report, Node, Report}, #st{members = Members} = St) ->
    case lists:member(Node, Members) of
        true -> {noreply, answer(step(take_report(Node, Report, St)))};
        false -> {noreply, ignore_node(Node, St)}
    end;
handle_cast(refresh, St) ->
    %% A webhook on a member: read git now (coalesced with a read under way).
    {noreply, answer(refresh(St))};
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private
-spec handle_info(term(), #st{}) -> {noreply, #st{}} | {stop, normal, #st{}}.
handle_info({'DOWN', Ref, process, Pid, Reason}, #st{worker = {Pid, Ref, Gen}} = St) ->
    St1 = St#st{worker = undefined},
    St2 = case Reason of
              {done, {ok, Parsed}} ->
                  targeted(Parsed, St1#st{loaded = Gen, refresh_error = undefined});
              {done, {error, Why}} ->
                  ?LOG_WARNING("bc_gitops: the coordinator cannot read the repository: ~p", [Why]),
                  St1#st{loaded = Gen, refresh_error = Why};
              Crash ->
                  St1#st{loaded = Gen, refresh_error = {crashed, Crash}}
          end,
    St3 = case St2#st.asked > Gen of
              true -> start_refresh(St2#st.asked, St2);
              false -> schedule(St2)
          end,
    {noreply, answer(step(St3))};
handle_info(tick, St) ->
    {noreply, refresh(St#st{timer = undefined})};
handle_info({wake, Ref}, #st{wake = {_, Ref}} = St) ->
    {noreply, answer(step(St#st{wake = undefined}))};
handle_info({nodeup, Node}, #st{members = Members} = St) ->
    case lists:member(Node, Members) of
        true -> ask_report(Node), {noreply, St};
        false -> {noreply, ignore_node(Node, St)}
    end;
handle_info({nodedown, Node}, St) ->
    St1 = St#st{reports = maps:remove(Node, St#st.reports),
                unacked = maps:remove(Node, St#st.unacked)},
    {noreply, answer(step(St1))};
handle_info({global_name_conflict, _Name}, St) ->
    %% Two sides of a healed partition each had a coordinator: global kept
    %% the other one.
    ?LOG_NOTICE("bc_gitops: ~p steps down as coordinator", [node()]),
    {stop, normal, St};
handle_info(_Other, St) ->
    {noreply, St}.

%%% Reading git

%% Asks for a parse of the branch as it is now (coalesced with one that
%% is under way).
-spec refresh(#st{}) -> #st{}.
refresh(#st{asked = Asked} = St) ->
    case St#st.worker of
        undefined -> start_refresh(Asked + 1, St);
        {_, _, Gen} -> St#st{asked = max(Asked, Gen + 1)}
    end.

%% Refresh number `Gen' starts.
-spec start_refresh(non_neg_integer(), #st{}) -> #st{}.
start_refresh(Gen, #st{config = Config, target = Target} = St) ->
    St1 = cancel_timer(St),
    {Pid, Ref} = spawn_monitor(?MODULE, refresh, [Config, Target]),
    St1#st{worker = {Pid, Ref, Gen}, asked = Gen}.

%% @private The refresh worker: pull and parse, its exit carrying the result.
-spec refresh(bc_gitops_config:config(), map() | undefined) -> no_return().
refresh(Config, Cache) ->
    exit({done, bc_gitops_pass:desired(Config, Cache)}).

%% A new parse: which spec each member should run. Invalid specs and
%% blocked apps (a cycle, a missing dependency) are left as they run.
-spec targeted(map(), #st{}) -> #st{}.
targeted(#{specs := Specs, errors := Errors} = Parsed, #st{members = Members} = St) ->
    Invalid = [A || #{app := A} <- Errors],
    {ok, #{blocked := Blocked}} = bc_gitops_plan:plan(Specs, [], Invalid),
    Keep = [A || {A, _} <- Blocked] ++ existing_atoms(Invalid),
    %% A pinned app runs its pinned spec, until git changes its spec.
    {Pins, Ended} = bc_gitops_pins:expire(St#st.pins, Parsed),
    _ = [?LOG_NOTICE("bc_gitops: git changed ~p's spec: its pin ends", [A])
         || A <- maps:keys(Ended)],
    Valid = [pinned(S, Pins) || #app_spec{name = N} = S <- Specs, not lists:member(N, Keep)],
    Wants = maps:from_list(
              [{M, maps:from_list([{N, S} || #app_spec{name = N} = S <- Valid,
                                             bc_gitops_placement:matches(placement(S), M)])}
               || M <- Members]),
    set_pins(Pins, St#st{target = Parsed, wants = Wants, keep = Keep}).

%% `Pins' as the pins, a new generation when they changed.
-spec set_pins(bc_gitops_pins:pins(), #st{}) -> #st{}.
set_pins(Pins, #st{pins = Pins} = St) ->
    St;
set_pins(Pins, #st{pins_gen = Gen} = St) ->
    %% Above the last, and above what a coordinator before this one may
    %% have made (the clocks of the members agree well enough for that).
    St#st{pins = Pins, pins_gen = max(Gen + 1, erlang:system_time(microsecond))}.

%% Whether `App' may be pinned (`Reason') now, and at what: `{ok, Nodes,
%% Digest}', the members that settled the spec the cluster should run
%% (`Digest'); an error while a rollout of it runs, when git does not
%% have it, when it is already rolled back, or without a majority.
-spec settled_at(atom(), rollback | pin, #st{}) ->
          {ok, [node()], bc_gitops_rollout:digest()} | {error, term()}.
settled_at(_App, _Reason, #st{target = undefined}) ->
    {error, no_target};
settled_at(App, Reason, #st{target = #{specs := Specs}, pins = Pins} = St) ->
    Quorum = quorum(St),
    InGit = lists:keymember(App, #app_spec.name, Specs),
    Pin = maps:get(App, Pins, none),
    RolledBack = case Pin of
                     #{reason := rollback} -> true;
                     _ -> false
                 end,
    Rolling = case maps:find(App, St#st.rollouts) of
                  {ok, #{state := running}} -> true;
                  _ -> false
              end,
    Wanted = lists:usort([bc_gitops_rollout:digest(S) || #{App := S} <- maps:values(St#st.wants)]),
    Up = reporting(St),
    if
        not Quorum -> {error, {no_quorum, Up, St#st.members}};
        not InGit; Wanted =:= [] -> {error, not_found};
        Reason =:= pin, Pin =/= none -> {error, {already_pinned, App}};
        Reason =:= rollback, RolledBack -> {error, {already_rolled_back, App}};
        Rolling -> {error, {rollout_in_progress, App}};
        true -> settled_on(App, Wanted, Up, St)
    end.

%% The members that settled the one spec the cluster wants for `App'.
-spec settled_on(atom(), [bc_gitops_rollout:digest()], [node()], #st{}) ->
          {ok, [node()], bc_gitops_rollout:digest()} | {error, term()}.
settled_on(App, [Digest], Up, #st{reports = Reports}) ->
    case [N || N <- Up, #{apps := #{App := #{settled := D}}} <- [maps:get(N, Reports)],
               D =:= Digest] of
        [] -> {error, {rollout_in_progress, App}};
        Nodes -> {ok, Nodes, Digest}
    end;
settled_on(App, _Several, _Up, _St) ->
    {error, {rollout_in_progress, App}}.

%% The wants again, after the pins changed.
-spec retarget(#st{}) -> #st{}.
retarget(#st{target = undefined} = St) -> St;
retarget(#st{target = Parsed} = St) -> targeted(Parsed, St).

-spec pinned(#app_spec{}, bc_gitops_pins:pins()) -> #app_spec{}.
pinned(#app_spec{name = N} = Spec, Pins) ->
    case bc_gitops_pins:running(N, Pins) of
        undefined -> Spec;
        Pinned -> Pinned
    end.

-spec placement(#app_spec{}) -> bc_gitops_placement:placement().
placement(#app_spec{placement = P}) -> P.

%% An app whose spec is invalid and whose name is not an atom yet runs
%% nowhere: nothing to keep.
-spec existing_atoms([binary() | atom()]) -> [atom()].
existing_atoms(Names) ->
    lists:append([try [binary_to_existing_atom(N, utf8)]
                   catch error:badarg -> []
                   end || N <- Names, is_binary(N)]) ++ [N || N <- Names, is_atom(N)].

-spec schedule(#st{}) -> #st{}.
schedule(#st{timer = undefined, config = #{reconcile_interval := Ms, clock := Clock}} = St) ->
    St#st{timer = Clock:send_after(Ms, self(), tick)};
schedule(St) ->
    St.

-spec cancel_timer(#st{}) -> #st{}.
cancel_timer(#st{timer = undefined} = St) -> St;
cancel_timer(#st{timer = T, config = #{clock := Clock}} = St) ->
    ok = Clock:cancel_timer(T),
    St#st{timer = undefined}.

%%% Reports and steps

-spec ask_report(node()) -> ok.
ask_report(Node) ->
    gen_server:cast({bc_gitops_reconciler, Node}, {report_to, self()}).

%% A report acknowledges the deltas up to the one it names; the holds a
%% member keeps rebuild the failed marks after a takeover.
-spec take_report(node(), bc_gitops_member:report(), #st{}) -> #st{}.
take_report(Node, #{ack := Ack, holds := Holds} = Report, #st{unacked = Unacked} = St) ->
    Sent = maps:get(Node, Unacked, []),
    Left = case lists:keymember(Ack, 1, Sent) of
               true -> tl(lists:dropwhile(fun({R, _}) -> R =/= Ack end, Sent));
               false -> Sent
           end,
    St1 = St#st{reports = (St#st.reports)#{Node => Report}, unacked = Unacked#{Node => Left},
                failed = maps:merge(Holds, St#st.failed)},
    case maps:get(pins_gen, Report, 0) of
        Newer when Newer > St#st.pins_gen ->
            %% Pins a coordinator before this one made (or dropped).
            retarget(St1#st{pins = maps:get(pins, Report, #{}), pins_gen = Newer});
        _ ->
            St1
    end.

-spec ignore_node(node(), #st{}) -> #st{}.
ignore_node(Node, #st{ignored = Ignored} = St) ->
    case lists:member(Node, Ignored) of
        true -> St;
        false ->
            ?LOG_WARNING("bc_gitops: ~p is not a member of the cluster; ignored", [Node]),
            St#st{ignored = [Node | Ignored]}
    end.

%% The members that answer: connected (or this node) and reporting.
-spec up(#st{}) -> [node()].
up(#st{members = Members}) ->
    Connected = [node() | nodes()],
    [M || M <- Members, lists:member(M, Connected)].

-spec reporting(#st{}) -> [node()].
reporting(#st{reports = Reports} = St) ->
    [M || M <- up(St), maps:is_key(M, Reports)].

-spec quorum(#st{}) -> boolean().
quorum(#st{members = Members} = St) ->
    2 * length(reporting(St)) > length(Members).

%% Decides, sends, and sets the timer for the next pause to end.
-spec step(#st{}) -> #st{}.
step(#st{target = undefined} = St) ->
    St;
step(#st{config = Config} = St) ->
    #{clock := Clock, cluster := Cluster} = Config,
    Quorum = quorum(St),
    View = #{members => St#st.members, up => reporting(St), quorum => Quorum,
             wants => St#st.wants, keep => St#st.keep, reports => overlaid(St),
             failed => St#st.failed, now => Clock:now_ms(),
             max_parallel => maps:get(max_parallel, Cluster, 1)},
    {Commands, Rollouts, Events, Failed, Wake} = bc_gitops_rollout:decide(View, St#st.rollouts),
    _ = [emit(E) || E <- Events],
    St1 = St#st{rollouts = Rollouts, failed = Failed},
    St2 = case Quorum of
              true -> send(Commands, St1);
              false -> St1
          end,
    wake_at(Wake, St2).

%% The reports as they will be once the deltas in flight are taken in.
-spec overlaid(#st{}) -> #{node() => #{atom() => bc_gitops_rollout:app_report()}}.
overlaid(#st{reports = Reports, unacked = Unacked}) ->
    maps:map(fun(Node, #{apps := Apps}) ->
                     lists:foldl(fun({_, Delta}, A) -> in_flight(Delta, A) end,
                                 Apps, maps:get(Node, Unacked, []))
             end, Reports).

-spec in_flight(bc_gitops_member:delta(), map()) -> map().
in_flight(#{set := Set, revert := Revert}, Apps) ->
    Blank = #{assigned => none, settled => none, failed => none},
    Apps1 = maps:fold(fun(App, Spec, A) ->
                              R = maps:get(App, A, Blank),
                              A#{App => R#{assigned := bc_gitops_rollout:digest(Spec)}}
                      end, Apps, Set),
    %% A revert goes to a spec not known here: neither the failed one nor,
    %% until reported, a settled one.
    maps:fold(fun(App, _Digest, A) ->
                      R = maps:get(App, A, Blank),
                      A#{App => R#{assigned := reverting}}
              end, Apps1, Revert).

%% Sends each member its delta: its commands, and the holds and the
%% commit when they changed for it. A member that has nothing left to
%% change in any rollout is at the target commit.
-spec send([bc_gitops_rollout:command()], #st{}) -> #st{}.
send(Commands, #st{target = #{commit := Commit} = Target, failed = Failed} = St) ->
    Holds = Failed,
    lists:foldl(
      fun(Node, Acc) ->
              Set = maps:from_list([{A, S} || {set, N, A, S} <- Commands, N =:= Node]),
              Revert = maps:from_list([{A, D} || {revert, N, A, D} <- Commands, N =:= Node]),
              Report = maps:get(Node, Acc#st.reports),
              Settled = not in_rollout(Node, Acc) andalso map_size(Set) =:= 0
                  andalso map_size(Revert) =:= 0,
              NewCommit = case Settled of
                              true -> Commit;
                              false -> maps:get(commit, Report)
                          end,
              Changed = map_size(Set) > 0 orelse map_size(Revert) > 0
                  orelse NewCommit =/= maps:get(commit, Report)
                  orelse Holds =/= maps:get(holds, Report)
                  orelse St#st.pins_gen =/= maps:get(pins_gen, Report, St#st.pins_gen),
              case Changed andalso maps:get(Node, Acc#st.unacked, []) =:= [] orelse
                  map_size(Set) > 0 orelse map_size(Revert) > 0 of
                  true ->
                      Delta = #{ref => make_ref(), commit => NewCommit, set => Set,
                                revert => Revert, holds => Holds, pins => St#st.pins,
                                pins_gen => St#st.pins_gen,
                                errors => maps:get(errors, Target, []),
                                warnings => maps:get(warnings, Target, [])},
                      gen_server:cast({bc_gitops_reconciler, Node}, {assign, self(), Delta}),
                      Unacked = Acc#st.unacked,
                      Acc#st{unacked = Unacked#{Node => maps:get(Node, Unacked, []) ++
                                                    [{maps:get(ref, Delta), Delta}]}};
                  false ->
                      Acc
              end
      end, St, reporting(St)).

%% Whether a running rollout still has to change `Node'.
-spec in_rollout(node(), #st{}) -> boolean().
in_rollout(Node, #st{rollouts = Rollouts}) ->
    lists:any(fun(#{state := running, current := C, pending := P}) ->
                      lists:member(Node, C) orelse lists:member(Node, P);
                 (_) -> false
              end, maps:values(Rollouts)).

-spec wake_at(integer() | infinity, #st{}) -> #st{}.
wake_at(infinity, St) ->
    St;
wake_at(At, #st{wake = {At, _}} = St) ->
    St;
wake_at(At, #st{config = #{clock := Clock}} = St) ->
    _ = case St#st.wake of
            {_, Old} -> Clock:cancel_timer(Old);
            undefined -> ok
        end,
    Ref = make_ref(),
    _ = Clock:send_after(max(0, At - Clock:now_ms()), self(), {wake, Ref}),
    St#st{wake = {At, Ref}}.

-spec emit(bc_gitops_rollout:event()) -> ok.
emit({Kind, App, Meta}) ->
    bc_gitops_telemetry:execute([bc_gitops, rollout, Kind], #{system_time => erlang:system_time()},
                                Meta#{app => App}).

%%% Answers

%% Callers get their answer once a parse that started after their
%% question is in, and their node has nothing left to change in a
%% rollout that can go on.
-spec answer(#st{}) -> #st{}.
answer(#st{waiters = Waiters} = St) ->
    {Done, Left} = lists:partition(fun(W) -> answer(W, St) =/= wait end, Waiters),
    _ = [gen_server:reply(From, answer(W, St)) || {From, _, _, _} = W <- Done],
    St#st{waiters = Left}.

-spec answer({gen_server:from(), reconcile | plan, node(), non_neg_integer()}, #st{}) -> term().
answer({_, _, _, Needed}, #st{loaded = Loaded}) when Loaded < Needed ->
    wait;
answer({_, _, _, _}, #st{refresh_error = Why}) when Why =/= undefined ->
    {error, Why};
answer({_, plan, Node, _}, #st{wants = Wants, target = Target}) ->
    {ok, #{commit => maps:get(commit, Target), specs => maps:values(maps:get(Node, Wants, #{})),
           errors => maps:get(errors, Target), warnings => maps:get(warnings, Target)}};
answer({_, reconcile, Node, _}, #st{members = Members} = St) ->
    case quorum(St) of
        false ->
            {error, {no_quorum, reporting(St), Members}};
        true ->
            Moving = [App || {App, R} <- maps:to_list(St#st.rollouts), moving(Node, R, St)],
            case Moving =:= [] andalso maps:get(Node, St#st.unacked, []) =:= [] andalso
                not maps:get(busy, maps:get(Node, St#st.reports, #{}), true) of
                true -> converged;
                false -> wait
            end
    end.

%% Whether rollout `R' still has to change `Node' and can go on.
-spec moving(node(), bc_gitops_rollout:rollout(), #st{}) -> boolean().
moving(Node, #{state := running, current := Current, pending := Pending} = R, St) ->
    lists:member(Node, Current) orelse
        (lists:member(Node, Pending) andalso not blocked(R, St));
moving(_Node, _R, _St) ->
    false.

%% A rollout that waits for a dependency whose rollout halted (or that
%% has none) cannot go on by itself.
-spec blocked(bc_gitops_rollout:rollout(), #st{}) -> boolean().
blocked(#{reason := {dependency_not_ready, Dep}}, #st{rollouts = Rollouts}) ->
    case maps:find(Dep, Rollouts) of
        {ok, #{state := running}} -> false;
        _ -> true
    end;
blocked(_R, _St) ->
    false.

-spec cluster_status(#st{}) -> map().
cluster_status(#st{members = Members, reports = Reports, target = Target} = St) ->
    Up = reporting(St),
    #{coordinator => node(),
      commit => case Target of #{commit := C} -> C; undefined -> undefined end,
      members => maps:from_list(
                   [{M, member_status(lists:member(M, Up), maps:get(M, Reports, undefined))}
                    || M <- Members]),
      rollouts => [maps:with([app, from, to, done, current, pending, state, reason], R)
                   || {_, R} <- lists:keysort(1, maps:to_list(St#st.rollouts))],
      pins => bc_gitops_pins:view(St#st.pins)}.

-spec member_status(boolean(), bc_gitops_member:report() | undefined) -> map().
member_status(Up, undefined) ->
    #{state => case Up of true -> up; false -> down end, commit => undefined, apps => #{}};
member_status(Up, #{commit := Commit, apps := Apps}) ->
    #{state => case Up of true -> up; false -> down end, commit => Commit,
      apps => maps:map(fun(_, R) -> maps:with([version, status, health], R) end,
                       maps:filter(fun(_, #{status := S}) -> S =/= absent end, Apps))}.

%% @private What sys:get_status/1 and crash reports show: credentials and
%% encrypted env values masked (bc_gitops_secrets:format_status/1).
-spec format_status(gen_server:format_status()) -> gen_server:format_status().
format_status(Status) ->
    bc_gitops_secrets:format_status(Status).
