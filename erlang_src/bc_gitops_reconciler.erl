%%% @doc The reconciler: schedules reconciles and answers questions about
%%% them, and does nothing slow itself.
%%%
%%% Every reconcile, dry run and manual action runs in a worker process, one
%%% at a time, so `status/0' answers at once whatever a clone or a build is
%%% doing. Triggers that arrive while a reconcile runs are coalesced into one
%%% follow-up reconcile, and every caller waiting on it gets its result. The
%%% interval timer counts from the end of the previous reconcile, and pauses
%%% while suspended (manual triggers still work then).
-module(bc_gitops_reconciler).

-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").
-include("bc_gitops.hrl").

-export([start_link/1, run/2, status/0, desired/0, suspend/0, resume/0, config/0, health/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).
-export([worker/2]).

-define(SERVER, ?MODULE).

-type job() :: reconcile | plan | {manual, bc_gitops_plan:action()}.

-record(st, {
    config :: bc_gitops_config:config(),
    suspended = false :: boolean(),
    worker :: undefined | {pid(), reference(), job()},
    %% Callers of the running job.
    waiting = [] :: [gen_server:from()],
    %% Jobs not started yet, in order, each with its callers.
    queue = [] :: [{job(), [gen_server:from()]}],
    timer :: undefined | reference(),
    cache :: undefined | map(),
    %% The last reconcile's plan and the state it was made from, when it
    %% applied nothing (see bc_gitops_reconcile).
    previous :: undefined | bc_gitops_reconcile:planned(),
    failures = #{} :: #{atom() => bc_gitops_reconcile:failure()},
    repairs = #{} :: #{atom() => bc_gitops_reconcile:repair()},
    last = #{} :: map(),
    last_commit :: binary() | undefined,
    last_at :: integer() | undefined,
    %% What was last written to the state file, and the apps it was made
    %% from: unchanged, it is not written again.
    saved :: {bc_gitops_store:stored(), #{atom() => #app_state{}}} | undefined
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
    St = #st{config = Config, last_commit = maps:get(last_commit, Stored)},
    case maps:get(repo_url, Config) of
        undefined ->
            ?LOG_NOTICE("bc_gitops: no repo_url configured; the reconciler is idle"),
            {ok, St};
        _ ->
            self() ! tick,
            {ok, St}
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
handle_call(suspend, _From, St) ->
    {reply, ok, cancel_timer(St#st{suspended = true})};
handle_call(resume, _From, #st{suspended = true} = St) ->
    {reply, ok, maybe_start(enqueue(reconcile, none, St#st{suspended = false}))};
handle_call(resume, _From, St) ->
    {reply, ok, St};
handle_call({run, Job}, From, St) when Job =:= reconcile; Job =:= plan ->
    case configured(St) of
        true -> {noreply, maybe_start(enqueue(Job, From, St))};
        false -> {reply, {error, not_configured}, St}
    end;
handle_call({run, {manual, _} = Job}, From, St) ->
    {noreply, maybe_start(enqueue(Job, From, St))};
handle_call(_Other, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private
-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info(tick, St) ->
    St1 = St#st{timer = undefined},
    case St1#st.suspended orelse not configured(St1) of
        true -> {noreply, St1};
        false -> {noreply, maybe_start(enqueue(reconcile, none, St1))}
    end;
handle_info({'DOWN', Ref, process, Pid, Reason}, #st{worker = {Pid, Ref, Job}} = St) ->
    Result = case Reason of
                 {done, R} -> expand(R, St);
                 Crash -> {crashed, Crash}
             end,
    St1 = finished(Job, Result, St#st{worker = undefined}),
    [gen_server:reply(From, reply(Job, Result)) || From <- St1#st.waiting],
    {noreply, schedule(maybe_start(St1#st{waiting = []}))};
handle_info({'EXIT', _, _}, St) ->
    {noreply, St};
handle_info(_Other, St) ->
    {noreply, St}.

%%% Jobs

-spec configured(#st{}) -> boolean().
configured(#st{config = #{repo_url := Url}}) -> Url =/= undefined.

%% Reconciles and dry runs already queued take more callers instead of
%% queueing again: that is the coalescing.
-spec enqueue(job(), gen_server:from() | none, #st{}) -> #st{}.
enqueue(Job, From, #st{queue = Queue} = St) ->
    Callers = [From || From =/= none],
    case lists:keyfind(Job, 1, Queue) of
        {Job, Waiting} when Job =:= reconcile; Job =:= plan ->
            St#st{queue = lists:keyreplace(Job, 1, Queue, {Job, Callers ++ Waiting})};
        _ ->
            St#st{queue = Queue ++ [{Job, Callers}]}
    end.

-spec maybe_start(#st{}) -> #st{}.
maybe_start(#st{worker = undefined, queue = [{Job, Callers} | Rest]} = St) ->
    St1 = cancel_timer(St),
    Ctx0 = #{config => St1#st.config, cache => St1#st.cache, failures => St1#st.failures,
             repairs => St1#st.repairs, manual => Callers =/= []},
    Ctx = case St1#st.previous of
              undefined -> Ctx0;
              Previous -> Ctx0#{previous => Previous}
          end,
    %% A heap sized for the parse and the state it is given and works on:
    %% a worker that starts small spends a no-op reconcile of 1,000 apps
    %% mostly growing its heap (2 ms of 6).
    Specs = case St1#st.cache of
                #{specs := S} -> length(S);
                _ -> 0
            end,
    Heap = min(1 bsl 20, 256 * Specs + 233),
    {Pid, Ref} = spawn_opt(?MODULE, worker, [Job, Ctx], [monitor, {min_heap_size, Heap}]),
    St1#st{worker = {Pid, Ref, Job}, waiting = Callers, queue = Rest};
maybe_start(St) ->
    St.

%% @private The worker process: its exit reason carries the result, so one
%% 'DOWN' message reports success and crash alike.
-spec worker(job(), bc_gitops_reconcile:context()) -> no_return().
worker(Job, Ctx) ->
    exit({done, shrink(work(Job, Ctx), Ctx)}).

%% A no-op reconcile gives back the parse and the state it was given:
%% `same' instead of a copy of each (a thousand specs and app states are a
%% megabyte to copy, and to collect in the reconciler); see expand/2.
-spec shrink(term(), bc_gitops_reconcile:context()) -> term().
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
expand(#{cache := Cache, current := Current, planned := Planned} = R,
       #st{cache = OldCache, previous = Previous}) ->
    Current1 = case Current of
                   same -> maps:get(current, Previous);
                   _ -> Current
               end,
    R#{cache := case Cache of same -> OldCache; _ -> Cache end,
       current := Current1, planned := Planned#{current := Current1}};
expand(Result, _St) ->
    Result.

-spec work(job(), bc_gitops_reconcile:context()) -> term().
work(reconcile, Ctx) ->
    bc_gitops_reconcile:run(Ctx);
work(plan, Ctx) ->
    bc_gitops_reconcile:dry_run(Ctx);
work({manual, Action}, #{config := #{runtime_module := Runtime}}) ->
    bc_gitops_actions:summary(bc_gitops_actions:run(Runtime, Action)).

-spec finished(job(), term(), #st{}) -> #st{}.
finished(reconcile, #{outcome := Outcome, cache := Cache, failures := Failures} = R, St) ->
    %% A run that failed before applying anything leaves the repairs as
    %% they were.
    St1 = St#st{cache = Cache, failures = Failures, repairs = maps:get(repairs, R, St#st.repairs),
                last = R, previous = maps:get(planned, R, undefined),
                last_at = erlang:system_time(millisecond)},
    case Outcome of
        ok ->
            Commit = maps:get(commit, Cache),
            ok = bc_gitops_health_monitor:watch(maps:get(specs, Cache)),
            St1#st{last_commit = Commit, saved = persist(R, St1#st.config, Commit, St1#st.saved)};
        {error, Why} ->
            ?LOG_WARNING("bc_gitops: reconcile failed: ~p", [Why]),
            St1
    end;
finished(reconcile, Crash, St) ->
    ?LOG_ERROR("bc_gitops: reconcile worker crashed: ~p", [Crash]),
    St#st{last = #{outcome => {error, Crash}}, previous = undefined,
          last_at = erlang:system_time(millisecond)};
finished(plan, {ok, _, Parsed}, #st{cache = Parsed} = St) ->
    St;
finished(plan, {ok, _, Parsed}, St) ->
    %% The last plan was made from another parse.
    St#st{cache = Parsed, previous = undefined};
finished(_Job, _Result, St) ->
    St.

-spec reply(job(), term()) -> term().
reply(reconcile, #{outcome := ok, applied := Applied, waiting := Waiting, blocked := Blocked,
                   cache := #{errors := SpecErrors}}) ->
    Details = maps:filter(fun(_, V) -> V =/= [] end,
                          #{failed => [{bc_gitops_actions:app(A), Why}
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

%% The timer runs only while nothing is queued or running.
-spec schedule(#st{}) -> #st{}.
schedule(#st{worker = undefined, queue = [], timer = undefined, suspended = false} = St) ->
    case configured(St) of
        true ->
            Interval = maps:get(reconcile_interval, St#st.config),
            St#st{timer = erlang:send_after(Interval, self(), tick)};
        false ->
            St
    end;
schedule(St) ->
    St.

-spec cancel_timer(#st{}) -> #st{}.
cancel_timer(#st{timer = undefined} = St) -> St;
cancel_timer(#st{timer = T} = St) ->
    _ = erlang:cancel_timer(T),
    St#st{timer = undefined}.

-spec persist(map(), bc_gitops_config:config(), binary(), Saved) -> Saved
              when Saved :: {bc_gitops_store:stored(), #{atom() => #app_state{}}} | undefined.
persist(#{current := Current}, _Config, Commit, {#{last_commit := Commit}, Current} = Saved) ->
    %% The same commit and the same apps as when it was written: one
    %% compare instead of building the stored form again.
    Saved;
persist(#{current := Current}, Config, Commit, Saved) ->
    Apps = maps:map(fun(_, #app_state{version = V, env = E, path = P, depends_on = D}) ->
                            #{version => V, env => E, path => P, depends_on => D}
                    end, Current),
    Stored = #{last_commit => Commit, apps => Apps},
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
status_map(#st{config = Config, last = Last, cache = Cache} = St) ->
    Specs = case Cache of undefined -> []; #{specs := S} -> S end,
    Current = maps:get(current, Last, #{}),
    Managed = [S#app_state{health = health(S)} || S <- maps:values(Current)],
    Healthy = [S || #app_state{health = healthy} = S <- Managed],
    #{status => status_name(St, length(Healthy) =:= length(Managed)),
      suspended => St#st.suspended,
      repo => case maps:get(repo_url, Config) of
                  undefined -> undefined;
                  Url -> bc_gitops_nif:redact_url(Url)
              end,
      branch => maps:get(branch, Config),
      last_commit => St#st.last_commit,
      last_reconcile => St#st.last_at,
      last_error => case maps:get(outcome, Last, ok) of ok -> undefined; {error, E} -> E end,
      app_count => length(Specs),
      healthy_count => length(Healthy),
      spec_errors => case Cache of undefined -> []; #{errors := Es} -> Es end,
      spec_warnings => case Cache of undefined -> []; #{warnings := Ws} -> Ws end,
      blocked => maps:get(blocked, Last, []),
      waiting => maps:get(waiting, Last, []),
      app_errors => app_errors(St#st.failures),
      repairs => repairs(St#st.repairs)}.

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

-spec status_name(#st{}, boolean()) -> atom().
status_name(#st{worker = {_, _, reconcile}}, _) -> reconciling;
status_name(#st{config = #{repo_url := undefined}}, _) -> idle;
status_name(#st{last = Last, failures = Failures, cache = Cache}, AllHealthy) ->
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
-spec repairs(#{atom() => bc_gitops_reconcile:repair()}) -> #{atom() => map()}.
repairs(Repairs) ->
    Now = erlang:monotonic_time(millisecond),
    maps:map(fun(_, #{count := N, retry_at := At, reason := R}) ->
                     #{count => N, reason => R, retry_in_ms => max(0, At - Now)}
             end, Repairs).

-spec app_errors(#{atom() => bc_gitops_reconcile:failure()}) -> #{atom() => map()}.
app_errors(Failures) ->
    Now = erlang:monotonic_time(millisecond),
    maps:map(fun(_, #{attempts := N, retry_at := At, reason := R, version := V}) ->
                     #{attempts => N, reason => R, version => V,
                       retry_in_ms => max(0, At - Now)}
             end, Failures).
