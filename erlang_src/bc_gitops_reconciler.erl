%%% @doc The reconciler: schedules reconciles and answers questions about
%%% them, and does nothing slow itself.
%%%
%%% Every reconcile, dry run and manual action runs in a worker process, one
%%% at a time, so `status/0' answers at once whatever a clone or a build is
%%% doing. Triggers that arrive while a reconcile runs are coalesced into one
%%% follow-up reconcile, and every caller waiting on it gets its result. The
%%% interval timer counts from the end of the previous reconcile, and pauses
%%% while suspended (manual triggers still work then).
%%%
%%% An app held by a backoff is retried when its backoff runs out: a retry
%%% timer is set for the first such moment, apart from the interval (as
%%% Flux's `retryInterval' is apart from its `interval'). A trigger that
%%% arrives while a reconcile waits for health gates makes it look at git;
%%% when the branch moved, that reconcile ends early, its callers join the
%%% follow-up, and its open gates are handed to it. Timers and time come
%%% from the `clock' option's module ({@link bc_gitops_clock}).
%%%
%%% It keeps the history of changes ({@link bc_gitops_history}: its
%%% workers send it each entry) and the pins ({@link bc_gitops_pins}),
%%% and writes both under `local_path' (after each job, and when a pin is
%%% made or dropped).
%%%
%%% In cluster mode it is a member: it never pulls git, but converges the
%%% node to what the coordinator assigned to it ({@link bc_gitops_member}),
%%% taking deltas only from a member node, and reports after each change
%%% and each reconcile.
-module(bc_gitops_reconciler).

-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").
-include("bc_gitops.hrl").

-export([start_link/1, run/2, status/0, desired/0, suspend/0, resume/0, config/0,
         ack/0, history/1, pin/2, unpin/1, settled/1, trigger/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, format_status/1]).
-export([worker/2]).

-define(SERVER, ?MODULE).

-type job() :: reconcile | plan | {manual, bc_gitops_plan:action()} | {rollback, atom()}.

-record(st, {
    config :: bc_gitops_config:config(),
    suspended = false :: boolean(),
    worker :: undefined | {pid(), reference(), job()},
    %% Callers of the running job.
    waiting = [] :: [gen_server:from()],
    %% Jobs not started yet, in order, each with its callers.
    queue = [] :: [{job(), [gen_server:from()]}],
    %% The interval timer and the retry timer: their tokens (a timer
    %% message with another token is stale) and clock references.
    timer :: undefined | {reference(), reference()},
    retry :: undefined | {reference(), reference()},
    %% Health gates a superseded reconcile left open, for the next one.
    gates = [] :: [bc_gitops_gate:gate()],
    cache :: undefined | map(),
    %% The last reconcile's plan and the state it was made from, when it
    %% applied nothing (see bc_gitops_pass).
    previous :: undefined | bc_gitops_pass:planned(),
    %% The health monitor told the specs of the last parse.
    watched :: pid() | undefined,
    failures = #{} :: #{atom() => bc_gitops_hold:failure()},
    history = bc_gitops_history:new() :: bc_gitops_history:history(),
    pins = #{} :: bc_gitops_pins:pins(),
    repairs = #{} :: #{atom() => bc_gitops_hold:repair()},
    last = #{} :: map(),
    last_commit :: binary() | undefined,
    last_at :: integer() | undefined,
    %% What was last written to the state file, and the apps it was made
    %% from: unchanged, it is not written again.
    saved :: {bc_gitops_store:stored(), #{atom() => #app_state{}}} | undefined,
    %% Cluster mode: the assignment, what of it settled, and where
    %% reports go.
    member :: undefined | #{assignment := bc_gitops_member:assignment(),
                            settled := bc_gitops_member:settled(),
                            coordinator := pid() | undefined,
                            monitor => reference()}
}).

%% @doc Starts the reconciler with a checked configuration.
-spec start_link(bc_gitops_config:config()) -> {ok, pid()} | {error, term()}.
start_link(Config) ->
    gen_server:start_link({local, ?SERVER}, ?MODULE, Config, []).

%% @doc Runs a job and waits for its result.
-spec run(job(), timeout()) -> term().
run(Job, Timeout) ->
    call({run, Job}, Timeout).

%% @doc The status map; see {@link bc_gitops:status/0}.
-spec status() -> {ok, map()} | {error, not_running}.
status() -> call(status, 5000).

%% @doc The specs of the last parse.
-spec desired() -> {ok, [#app_spec{}]} | {error, not_running}.
desired() -> call(desired, 5000).

%% @doc The checked configuration it runs with.
-spec config() -> {ok, bc_gitops_config:config()} | {error, not_running}.
config() -> call(config, 5000).

%% @doc Cluster mode: the last assignment delta taken in.
-spec ack() -> reference() | undefined.
ack() ->
    case call(ack, 5000) of
        {ok, Ack} -> Ack;
        {error, _} -> undefined
    end.

%% @doc The history, newest first: all of it, or one app's.
-spec history(all | atom()) -> {ok, [bc_gitops_history:entry()]} | {error, not_running}.
history(Which) -> call({history, Which}, 5000).

%% @doc Pins `App' at the version it runs (`State').
-spec pin(atom(), #app_state{}) -> ok | {error, not_running}.
pin(App, State) -> call({pin, App, State}, 5000).

%% @doc Cluster mode: the spec `App' last settled at on this member, and
%% the one before it.
-spec settled(atom()) -> {ok, {#app_spec{}, #app_spec{} | undefined}} | error
                         | {error, not_running | not_clustered}.
settled(App) -> call({settled, App}, 5000).

%% @doc Drops `App''s pin, and reconciles.
-spec unpin(atom()) -> ok | {error, {not_pinned, atom()} | not_running}.
unpin(App) -> call({unpin, App}, 5000).

%% @doc Asks for a reconcile without waiting for it (a webhook): coalesced
%% as a tick is. `suspended' or `not_configured' when none is started.
-spec trigger() -> ok | suspended | not_configured | {error, not_running}.
trigger() -> call(trigger, 5000).

%% @doc Pauses automatic reconciles.
-spec suspend() -> ok | {error, not_running}.
suspend() -> call(suspend, 5000).

%% @doc Resumes automatic reconciles, starting one now.
-spec resume() -> ok | {error, not_running}.
resume() -> call(resume, 5000).

-spec call(term(), timeout()) -> term().
call(Request, Timeout) ->
    try gen_server:call(?SERVER, Request, Timeout)
    catch exit:{noproc, _} -> {error, not_running}
    end.

%%% gen_server

%% @private
-spec init(bc_gitops_config:config()) -> {ok, #st{}}.
init(Config) ->
    process_flag(trap_exit, true),
    Stored = case maps:get(repo_url, Config) of
                 undefined -> #{last_commit => undefined};
                 _ -> bc_gitops_store:load(bc_gitops_config:state_file(Config))
             end,
    {History, Pins} = case maps:get(repo_url, Config) of
                          undefined -> {bc_gitops_history:new(), #{}};
                          _ -> {bc_gitops_history:load(Config), bc_gitops_pins:load(Config)}
                      end,
    St = #st{config = Config, last_commit = maps:get(last_commit, Stored),
             history = History, pins = Pins,
             member = case maps:get(cluster, Config, false) of
                          false -> undefined;
                          _ ->
                              Kept = maps:merge(#{assignment => bc_gitops_member:new(),
                                                  settled => #{}},
                                                maps:get(cluster, Stored, #{})),
                              Kept#{coordinator => undefined}
                      end},
    case maps:get(repo_url, Config) of
        undefined ->
            ?LOG_NOTICE("bc_gitops: no repo_url configured; the reconciler is idle"),
            {ok, St};
        _ ->
            Token = make_ref(),
            self() ! {tick, Token},
            {ok, St#st{timer = {Token, Token}}}
    end.

%% @private
-spec handle_call(term(), gen_server:from(), #st{}) ->
    {reply, term(), #st{}} | {noreply, #st{}}.
handle_call(status, _From, St) ->
    {reply, {ok, status_map(St)}, St};
handle_call(desired, _From, #st{cache = Cache} = St) ->
    {reply, {ok, case Cache of undefined -> []; #{specs := S} -> S end}, St};
handle_call(config, _From, St) ->
    {reply, {ok, St#st.config}, St};
handle_call({context, Pid}, _From, #st{worker = {Pid, _, reconcile}} = St) ->
    %% A steady reconcile found something moved: it needs what it was not
    %% given.
    Full = #{cache => St#st.cache},
    {reply, case St#st.previous of
                undefined -> Full;
                Previous -> Full#{previous => Previous}
            end, St};
handle_call(ack, _From, #st{member = #{assignment := #{ack := Ack}}} = St) ->
    {reply, {ok, Ack}, St};
handle_call({settled, App}, _From, #st{member = #{settled := S}} = St) ->
    {reply, bc_gitops_member:previous(App, S), St};
handle_call({settled, _App}, _From, St) ->
    {reply, {error, not_clustered}, St};
handle_call(trigger, _From, St) ->
    case {St#st.suspended, configured(St)} of
        {true, _} -> {reply, suspended, St};
        {false, false} -> {reply, not_configured, St};
        {false, true} -> {reply, ok, maybe_start(enqueue(reconcile, none, St))}
    end;
handle_call(suspend, _From, St) ->
    {reply, ok, cancel_timers(St#st{suspended = true})};
handle_call(resume, _From, #st{suspended = true} = St) ->
    {reply, ok, maybe_start(enqueue(reconcile, none, St#st{suspended = false}))};
handle_call(resume, _From, St) ->
    {reply, ok, St};
handle_call({history, Which}, _From, St) ->
    {reply, {ok, bc_gitops_history:entries(Which, St#st.history)}, St};
handle_call({pin, App, #app_state{version = V} = State}, _From, #st{pins = Pins} = St) ->
    %% The spec it runs: its last change's, else git's, at the version
    %% and env it runs with.
    Known = case bc_gitops_history:last_change(App, St#st.history) of
                #{'after' := After} -> After;
                none -> git_spec(App, St)
            end,
    Running = case Known of
                  undefined -> undefined;
                  _ -> bc_gitops_history:before(Known, State, Known)
              end,
    {reply, ok, save_pins(St#st{pins = bc_gitops_pins:pin(App, V, Running, pin, git_spec(App, St),
                                                          Pins)})};
handle_call({unpin, App}, _From, #st{pins = Pins} = St) ->
    case bc_gitops_pins:unpin(App, Pins) of
        {ok, Pins1} ->
            St1 = save_pins(St#st{pins = Pins1}),
            %% Git is followed again: a reconcile says how it stands.
            {reply, ok, case configured(St1) of
                            true -> maybe_start(enqueue(reconcile, none, St1));
                            false -> St1
                        end};
        Error ->
            {reply, Error, St}
    end;
handle_call({run, Job}, From, St) when Job =:= reconcile; Job =:= plan ->
    case configured(St) of
        true -> {noreply, maybe_start(enqueue(Job, From, St))};
        false -> {reply, {error, not_configured}, St}
    end;
handle_call({run, Job}, From, St) when element(1, Job) =:= manual; element(1, Job) =:= rollback ->
    {noreply, maybe_start(enqueue(Job, From, St))};
handle_call(_Other, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast({assign, From, Delta}, #st{member = #{assignment := A, settled := S} = M} = St) ->
    case from_member(From, St) of
        true ->
            A1 = bc_gitops_member:assign(Delta, A, S),
            St1 = follow(From, St#st{member = M#{assignment := A1},
                                     last_commit = bc_gitops_member:commit(A1)}),
            %% The reconcile starts before the assignment is written: the
            %% write syncs the disk, and the acknowledgement waits for it.
            %% A suspended member keeps it for when it resumes (the
            %% rollout waits for it meanwhile).
            St2 = case St1#st.suspended of
                      true -> St1;
                      false -> maybe_start(enqueue(reconcile, none, St1))
                  end,
            {noreply, report(save_member(St2))};
        false ->
            {noreply, St}
    end;
handle_cast({report_to, From}, #st{member = #{}} = St) ->
    case from_member(From, St) of
        true -> {noreply, report(follow(From, St))};
        false -> {noreply, St}
    end;
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private
-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info({Timer, Token}, St) when Timer =:= tick; Timer =:= retry ->
    case timer_fired(Timer, Token, St) of
        {true, St1} ->
            case St1#st.suspended orelse not configured(St1) of
                true -> {noreply, St1};
                false -> {noreply, maybe_start(enqueue(reconcile, none, St1))}
            end;
        false ->
            {noreply, St}
    end;
handle_info({'DOWN', Ref, process, Pid, Reason}, #st{worker = {Pid, Ref, Job}} = St) ->
    Result = case Reason of
                 {done, R} -> expand(R, St);
                 Crash -> {crashed, Crash}
             end,
    St1 = finished(Job, Result, St#st{worker = undefined}),
    St2 = case Result of
              #{superseded := true} ->
                  %% Its callers get the result of the reconcile of the
                  %% new commit, queued by the trigger that ended it.
                  enqueue_callers(reconcile, St1#st.waiting, St1);
              _ ->
                  [gen_server:reply(From, reply(Job, Result)) || From <- St1#st.waiting],
                  St1
          end,
    {noreply, schedule(maybe_start(St2#st{waiting = []}))};
handle_info({'DOWN', Ref, process, _, _}, #st{member = #{monitor := Ref} = M} = St) ->
    %% The coordinator reported to is gone (a late word from one that had
    %% stepped down, or it died): this node's cluster part says who is.
    ok = bc_gitops_cluster:tell(),
    {noreply, St#st{member = maps:remove(monitor, M#{coordinator := undefined})}};
handle_info({bc_gitops_history, Entry, Change}, #st{history = H} = St) ->
    {noreply, St#st{history = bc_gitops_history:add(Entry, Change, H)}};
handle_info({'EXIT', _, _}, St) ->
    {noreply, St};
handle_info(_Other, St) ->
    {noreply, St}.

%%% Jobs

%% Whether there is anything to reconcile to: a repository, and in cluster
%% mode an assignment (before the first, the member leaves the node alone).
-spec configured(#st{}) -> boolean().
configured(#st{config = #{repo_url := undefined}}) -> false;
configured(#st{member = #{assignment := #{ack := undefined}}}) -> false;
configured(#st{}) -> true.

%%% Cluster member

%% Only a member node's coordinator is listened to.
-spec from_member(pid(), #st{}) -> boolean().
from_member(Pid, #st{config = #{cluster := #{members := Members}}}) ->
    case lists:member(node(Pid), Members) of
        true ->
            true;
        false ->
            ?LOG_WARNING("bc_gitops: ignoring ~p, which is not a member of the cluster", [node(Pid)]),
            false
    end.

%% Reports go to `Pid' from now on; it is watched.
-spec follow(pid(), #st{}) -> #st{}.
follow(Pid, #st{member = #{coordinator := Pid}} = St) ->
    St;
follow(Pid, #st{member = M} = St) ->
    _ = [erlang:demonitor(Old, [flush]) || #{monitor := Old} <- [M]],
    St#st{member = M#{coordinator := Pid, monitor => erlang:monitor(process, Pid)}}.

%% What settled in a reconcile of the assignment; the coordinator is told.
-spec settle(map(), #st{}) -> #st{}.
settle(_R, #st{member = undefined} = St) ->
    St;
settle(R, #st{member = #{assignment := A, settled := S} = M} = St) ->
    report(St#st{member = M#{settled := bc_gitops_member:settle(R, A, S)}}).

-spec report(#st{}) -> #st{}.
report(#st{member = undefined} = St) ->
    St;
report(#st{member = #{coordinator := undefined}} = St) ->
    St;
report(#st{member = #{coordinator := Pid, assignment := A, settled := S}} = St) ->
    Current = maps:get(current, St#st.last, #{}),
    Busy = case St#st.worker of
               {_, _, reconcile} -> true;
               _ -> lists:keymember(reconcile, 1, St#st.queue)
           end,
    Report = #{node => node(), ack => maps:get(ack, A), commit => bc_gitops_member:commit(A),
               busy => Busy, holds => bc_gitops_member:holds(A), pins => bc_gitops_member:pins(A),
               pins_gen => bc_gitops_member:pins_gen(A),
               apps => bc_gitops_member:report(A, S, St#st.failures, Current)},
    gen_server:cast(Pid, {report, node(), Report}),
    St.

-spec member_stored(#st{}) -> map().
member_stored(#st{member = undefined}) -> #{};
member_stored(#st{member = #{assignment := A, settled := S}}) ->
    #{cluster => #{assignment => A, settled => S}}.

%% A new assignment is kept at once: a member that restarts converges to
%% it even before it reaches a coordinator.
-spec save_member(#st{}) -> #st{}.
save_member(#st{saved = Saved, config = Config, last_commit = Commit} = St) ->
    Current = case Saved of
                  {_, C} -> C;
                  undefined -> #{}
              end,
    St#st{saved = persist(#{current => Current}, Config, Commit, member_stored(St), Saved)}.

%% Reconciles and dry runs already queued take more callers instead of
%% queueing again: that is the coalescing. A reconcile asked for while one
%% runs also tells the running one (see bc_gitops_apply).
-spec enqueue(job(), gen_server:from() | none, #st{}) -> #st{}.
enqueue(Job, From, St) ->
    case {Job, St#st.worker} of
        {reconcile, {Pid, _, reconcile}} -> ok = bc_gitops_apply:trigger(Pid);
        _ -> ok
    end,
    enqueue_callers(Job, [From || From =/= none], St).

-spec enqueue_callers(job(), [gen_server:from()], #st{}) -> #st{}.
enqueue_callers(Job, Callers, #st{queue = Queue} = St) ->
    case lists:keyfind(Job, 1, Queue) of
        {Job, Waiting} when Job =:= reconcile; Job =:= plan ->
            St#st{queue = lists:keyreplace(Job, 1, Queue, {Job, Callers ++ Waiting})};
        _ ->
            St#st{queue = Queue ++ [{Job, Callers}]}
    end.

-spec maybe_start(#st{}) -> #st{}.
maybe_start(#st{worker = undefined, queue = [{Job, Callers} | Rest]} = St) ->
    St1 = cancel_timers(St),
    Ctx0 = #{config => St1#st.config, cache => St1#st.cache, failures => St1#st.failures,
             repairs => St1#st.repairs, manual => Callers =/= [], gates => St1#st.gates,
             pins => St1#st.pins, sink => self(),
             change => case Job of
                           {rollback, App} -> bc_gitops_history:last_change(App, St1#st.history);
                           _ -> none
                       end},
    Ctx1 = case St1#st.previous of
               undefined -> Ctx0;
               Previous -> Ctx0#{previous => Previous}
           end,
    Ctx2 = case St1#st.member of
               undefined ->
                   Ctx1;
               #{assignment := #{ack := Ack} = A} ->
                   Ctx1#{given => bc_gitops_member:parsed(A), holds => bc_gitops_member:holds(A),
                         moved => fun() -> ack() =/= Ack end}
           end,
    %% A heap sized for the parse and the state it is given and works on:
    %% a worker that starts small spends a no-op reconcile of 1,000 apps
    %% mostly growing its heap (2 ms of 6). A steady worker is given
    %% neither.
    {Ctx, Specs} = case {steady(Job, St1), St1#st.cache} of
                       {undefined, #{specs := S}} -> {Ctx2, length(S)};
                       {undefined, _} -> {Ctx2, 0};
                       {Steady, _} -> {(maps:without([cache, previous], Ctx2))#{steady => Steady}, 0}
                   end,
    Heap = min(1 bsl 20, 256 * Specs + 233),
    {Pid, Ref} = spawn_opt(?MODULE, worker, [Job, Ctx], [monitor, {min_heap_size, Heap}]),
    St1#st{worker = {Pid, Ref, Job}, waiting = Callers, queue = Rest,
           gates = case Job of reconcile -> []; _ -> St1#st.gates end};
maybe_start(St) ->
    St.

%% A reconcile after one that applied nothing and left nothing to retry,
%% wait for or gate, on a runtime that gave a state token: the worker gets
%% the commit and the token, and fetches the parse and the last plan only
%% if either moved (see bc_gitops_pass). Not in cluster mode, where the
%% coordinator's assignment is the parse; nor when the health monitor was
%% restarted since it was told the specs.
-spec steady(job(), #st{}) -> bc_gitops_pass:steady() | undefined.
steady(reconcile, #st{member = undefined, cache = #{commit := Commit}, failures = Failures,
                      repairs = Repairs, gates = [], previous = #{token := Token},
                      last = #{outcome := ok, waiting := []} = Last, watched = Monitor})
  when map_size(Failures) =:= 0, map_size(Repairs) =:= 0, Token =/= undefined,
       is_pid(Monitor) ->
    case whereis(bc_gitops_health_monitor) of
        Monitor ->
            Self = self(),
            #{commit => Commit, token => Token, summary => bc_gitops_pass:summary(Last),
              fetch => fun() -> gen_server:call(Self, {context, self()}, infinity) end};
        _ ->
            undefined
    end;
steady(_Job, _St) ->
    undefined.

%% @private The worker process: its exit reason carries the result, so one
%% 'DOWN' message reports success and crash alike.
-spec worker(job(), bc_gitops_pass:context()) -> no_return().
worker(Job, Ctx) ->
    exit({done, shrink(work(Job, Ctx), Ctx)}).

%% A no-op reconcile gives back the parse and the state it was given:
%% `same' instead of a copy of each (a thousand specs and app states are a
%% megabyte to copy, and to collect in the reconciler); see expand/2.
-spec shrink(term(), bc_gitops_pass:context()) -> term().
shrink(#{outcome := ok, cache := Cache, current := Current,
         planned := #{current := Current} = Planned} = R, Ctx) ->
    Same = case Ctx of
               #{previous := #{current := Current}} -> same;
               _ -> Current
           end,
    R#{cache := case Ctx of #{cache := Cache} -> same; _ -> Cache end,
       current := Same, planned := Planned#{current := Same}};
shrink(Result, _Ctx) ->
    Result.

-spec expand(term(), #st{}) -> term().
expand(#{unchanged := true}, #st{last = Last}) ->
    %% A steady reconcile found nothing moved: the last result stands.
    Last#{unchanged => true};
expand(#{cache := Cache, current := Current, planned := Planned} = R,
       #st{cache = OldCache, previous = Previous}) ->
    Current1 = case Current of
                   same -> maps:get(current, Previous);
                   _ -> Current
               end,
    R#{cache := case Cache of same -> OldCache; _ -> Cache end,
       current := Current1, planned := Planned#{current := Current1}};
expand(#{cache := same} = R, #st{cache = OldCache}) ->
    %% A steady reconcile that failed before it fetched the parse.
    R#{cache := OldCache};
expand(Result, _St) ->
    Result.

-spec work(job(), bc_gitops_pass:context()) -> term().
work(reconcile, Ctx) ->
    bc_gitops_pass:run(Ctx);
work(plan, Ctx) ->
    bc_gitops_pass:dry_run(Ctx);
work({manual, Action}, Ctx) ->
    bc_gitops_manual:run(Action, Ctx);
work({rollback, App}, Ctx) ->
    bc_gitops_manual:rollback(App, Ctx).

%% The history is written after each job.
-spec finished(job(), term(), #st{}) -> #st{}.
finished(Job, Result, St) ->
    St1 = finished1(Job, Result, St),
    St1#st{history = bc_gitops_history:save(St1#st.config, St1#st.history)}.

-spec finished1(job(), term(), #st{}) -> #st{}.
finished1(reconcile, #{unchanged := true}, St) ->
    %% Same commit, same state: nothing to persist, watch or report.
    St#st{last_at = erlang:system_time(millisecond)};
finished1(reconcile, #{outcome := Outcome, cache := Cache, failures := Failures} = R, St0) ->
    St = case maps:get(ended_pins, R, #{}) of
             Ended when map_size(Ended) =:= 0 -> St0;
             Ended -> save_pins(St0#st{pins = bc_gitops_pins:drop(Ended, St0#st.pins)})
         end,
    %% A run that failed before applying anything leaves the repairs as
    %% they were.
    St1 = St#st{cache = Cache, failures = Failures, repairs = maps:get(repairs, R, St#st.repairs),
                last = R, previous = maps:get(planned, R, undefined),
                gates = maps:get(gates, R, []), last_at = erlang:system_time(millisecond)},
    case Outcome of
        ok ->
            Commit = maps:get(commit, Cache),
            %% Taken first: a monitor restarted after it is told again.
            Monitor = whereis(bc_gitops_health_monitor),
            ok = bc_gitops_health_monitor:watch(maps:get(specs, Cache),
                                                maps:from_list([{A, healthy}
                                                                || A <- maps:get(healthy, R)])),
            St2 = settle(R, St1#st{watched = Monitor}),
            St2#st{last_commit = Commit,
                   saved = persist(R, St2#st.config, Commit, member_stored(St2), St2#st.saved)};
        {error, Why} ->
            ?LOG_WARNING("bc_gitops: reconcile failed: ~p", [Why]),
            %% A member still tells the coordinator it is no longer busy.
            report(St1)
    end;
finished1(reconcile, Crash, St) ->
    ?LOG_ERROR("bc_gitops: reconcile worker crashed: ~p", [Crash]),
    report(St#st{last = #{outcome => {error, Crash}}, previous = undefined,
                 last_at = erlang:system_time(millisecond)});
finished1(plan, {ok, _, Parsed}, #st{cache = Parsed} = St) ->
    St;
finished1(plan, {ok, _, Parsed}, St) ->
    %% The last plan was made from another parse.
    St#st{cache = Parsed, previous = undefined};
finished1({rollback, App}, {ok, #{to := Version}}, #st{pins = Pins} = St) ->
    Running = case bc_gitops_history:last_change(App, St#st.history) of
                  #{'after' := After} -> After;
                  none -> undefined
              end,
    save_pins(St#st{pins = bc_gitops_pins:pin(App, Version, Running, rollback, git_spec(App, St),
                                              Pins)});
finished1(_Job, _Result, St) ->
    St.

%% `App''s spec in the last parse, if valid.
-spec git_spec(atom(), #st{}) -> #app_spec{} | undefined.
git_spec(App, #st{cache = #{specs := Specs}}) ->
    case lists:keyfind(App, #app_spec.name, Specs) of
        false -> undefined;
        Spec -> Spec
    end;
git_spec(_App, _St) ->
    undefined.

-spec save_pins(#st{}) -> #st{}.
save_pins(#st{config = #{repo_url := undefined}} = St) ->
    St;
save_pins(#st{config = Config, pins = Pins} = St) ->
    case bc_gitops_pins:save(Config, Pins) of
        ok -> ok;
        {error, Why} -> ?LOG_WARNING("bc_gitops: cannot persist pins: ~p", [Why])
    end,
    St.

-spec reply(job(), term()) -> term().
reply(reconcile, #{outcome := ok, applied := Applied, waiting := Waiting, blocked := Blocked,
                   cache := #{errors := SpecErrors}}) ->
    Details = maps:filter(fun(_, V) -> V =/= [] end,
                          #{failed => [{bc_gitops_action:app(A), Why}
                                       || {A, {error, Why}} <- Applied],
                            waiting => Waiting, blocked => Blocked,
                            spec_errors => SpecErrors}),
    case map_size(Details) of
        0 -> ok;
        _ -> {error, {out_of_sync, Details}}
    end;
reply(reconcile, #{outcome := Outcome}) -> Outcome;
reply(plan, {ok, Plan, _Parsed}) -> {ok, Plan};
reply(_Job, {crashed, _} = Crash) -> {error, Crash};
reply(_Job, Result) -> Result.

%% The timers run only while nothing is queued or running: the interval
%% from now, and a retry when the first app held by a backoff may go.
-spec schedule(#st{}) -> #st{}.
schedule(#st{worker = undefined, queue = [], timer = undefined, retry = undefined,
             suspended = false, config = Config} = St) ->
    case configured(St) of
        true ->
            St1 = St#st{timer = start_timer(tick, maps:get(reconcile_interval, Config), St)},
            case retry_in(St1) of
                none -> St1;
                Ms -> St1#st{retry = start_timer(retry, Ms, St1)}
            end;
        false ->
            St
    end;
schedule(St) ->
    St.

%% When the first backoff runs out, if any: of an app that failed (but
%% a rolled-back version, which waits for a new spec), or of an app the
%% last reconcile held (a repair backoff, or a failure of before).
-spec retry_in(#st{}) -> none | non_neg_integer().
retry_in(#st{failures = Failures, last = Last} = St) ->
    Now = now(St),
    Failed = [max(0, At - Now) || #{retry_at := At, reason := R} <- maps:values(Failures),
                                  not is_tuple(R) orelse element(1, R) =/= rolled_back],
    case Failed ++ [Ms || {_App, {backoff, _, Ms}} <- maps:get(waiting, Last, [])] of
        [] -> none;
        Delays -> lists:min(Delays)
    end.

-spec start_timer(tick | retry, non_neg_integer(), #st{}) -> {reference(), reference()}.
start_timer(Kind, Ms, #st{config = #{clock := Clock}}) ->
    Token = make_ref(),
    {Token, Clock:send_after(Ms, self(), {Kind, Token})}.

%% Whether a timer message is the current one of its kind (a cancelled
%% timer's message may still arrive); it is then no longer set.
-spec timer_fired(tick | retry, reference(), #st{}) -> {true, #st{}} | false.
timer_fired(tick, Token, #st{timer = {Token, _}} = St) -> {true, St#st{timer = undefined}};
timer_fired(retry, Token, #st{retry = {Token, _}} = St) -> {true, St#st{retry = undefined}};
timer_fired(_Kind, _Token, _St) -> false.

-spec cancel_timers(#st{}) -> #st{}.
cancel_timers(#st{config = #{clock := Clock}} = St) ->
    _ = [Clock:cancel_timer(Ref) || {_Token, Ref} <- [St#st.timer, St#st.retry]],
    St#st{timer = undefined, retry = undefined}.

-spec persist(map(), bc_gitops_config:config(), binary() | undefined, map(), Saved) -> Saved
              when Saved :: {bc_gitops_store:stored(), #{atom() => #app_state{}}} | undefined.
persist(#{current := Current}, _Config, Commit, Extra,
        {#{last_commit := Commit}, Current} = Saved) when Extra =:= #{} ->
    %% The same commit and the same apps as when it was written: one
    %% compare instead of building the stored form again.
    Saved;
persist(#{current := Current}, Config, Commit, Extra, Saved) ->
    Apps = maps:map(fun(_, #app_state{version = V, env = E, path = P, depends_on = D}) ->
                            #{version => V, env => E, path => P, depends_on => D}
                    end, Current),
    write_state(maps:merge(#{last_commit => Commit, apps => Apps}, Extra), Current, Config, Saved).

-spec write_state(bc_gitops_store:stored(), #{atom() => #app_state{}}, bc_gitops_config:config(),
                  Saved) -> Saved
              when Saved :: {bc_gitops_store:stored(), #{atom() => #app_state{}}} | undefined.
write_state(Stored, Current, Config, Saved) ->
    case Saved of
        {Stored, _} ->
            {Stored, Current};
        _ ->
            case bc_gitops_store:save(bc_gitops_config:state_file(Config), Stored) of
                ok ->
                    {Stored, Current};
                {error, Why} ->
                    ?LOG_WARNING("bc_gitops: cannot persist state: ~p", [Why]),
                    Saved
            end
    end.

%%% Status

-spec status_map(#st{}) -> map().
status_map(#st{config = Config} = St) ->
    Running = case St#st.worker of
                  {_, _, Job} -> Job;
                  undefined -> none
              end,
    View = bc_gitops_status:view(#{config => Config, last => St#st.last, cache => St#st.cache,
                                   running => Running, suspended => St#st.suspended,
                                   last_commit => St#st.last_commit, last_at => St#st.last_at,
                                   pins => shown_pins(St), failures => St#st.failures,
                                   repairs => St#st.repairs, now => now(St)}),
    case St#st.member of
        #{} -> View#{cluster => bc_gitops_cluster:info()};
        undefined -> View
    end.

-spec now(#st{}) -> integer().
now(#st{config = #{clock := Clock}}) -> Clock:now_ms().

%% The pins status() shows: this node's, or in cluster mode the cluster's
%% (which the coordinator keeps and sends with each assignment).
-spec shown_pins(#st{}) -> bc_gitops_pins:pins().
shown_pins(#st{member = #{assignment := A}}) -> bc_gitops_member:pins(A);
shown_pins(#st{pins = Pins}) -> Pins.

%% @private What sys:get_status/1 and crash reports show: the secrets of
%% the configuration (bc_gitops_config:redacted/1), other credentials and
%% encrypted env values (bc_gitops_secrets:format_status/1) masked.
-spec format_status(gen_server:format_status()) -> gen_server:format_status().
format_status(#{state := #st{config = Config} = St} = Status) ->
    bc_gitops_secrets:format_status(Status#{state := St#st{config = bc_gitops_config:redacted(Config)}});
format_status(Status) ->
    bc_gitops_secrets:format_status(Status).
