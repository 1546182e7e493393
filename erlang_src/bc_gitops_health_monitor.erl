%%% @doc Checks the health of every managed app that has a health spec,
%%% each every `interval' milliseconds, each check in a process of its own
%%% ({@link bc_gitops_health}), so that no check ever runs in the
%%% reconciler's loop or in this one.
%%%
%%% The latest result of each app is in an ETS table, read without a call;
%%% each result also goes to {@link bc_gitops_notify}, which tells the
%%% team when an app's health changes.
%%% An app without a health spec has no entry: it is healthy when it runs.
-module(bc_gitops_health_monitor).

-behaviour(gen_server).

-include("bc_gitops.hrl").

-export([start_link/0, watch/1, watch/2, health/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, format_status/1]).

-define(TABLE, bc_gitops_health).

-record(st, {specs = #{} :: #{atom() => #health_spec{}},
             timers = #{} :: #{atom() => reference()},
             running = #{} :: #{pid() => atom()}}).

%% @private
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Checks from now on exactly the apps of `Specs' that have a health
%% spec; a changed spec restarts that app's checks.
-spec watch([#app_spec{}]) -> ok.
watch(Specs) ->
    watch(Specs, #{}).

%% @doc The same, with results already known of some apps (a health gate
%% just saw them healthy): they stand until the app's next check.
-spec watch([#app_spec{}], #{atom() => bc_gitops_health:result()}) -> ok.
watch(Specs, Known) ->
    gen_server:cast(?MODULE, {watch, maps:from_list([{N, H} || #app_spec{name = N, health = H}
                                                                   <- Specs, H =/= undefined]),
                              Known}).

%% @doc The latest health of `App': `no_check' when it has no health spec,
%% `unknown' before its first check.
-spec health(atom()) -> healthy | {unhealthy, term()} | unknown | no_check.
health(App) ->
    try ets:lookup(?TABLE, App) of
        [{App, Result}] -> Result;
        [] -> no_check
    catch
        error:badarg -> no_check
    end.

%% @private
-spec init([]) -> {ok, #st{}}.
init([]) ->
    _ = ets:new(?TABLE, [named_table, protected, set]),
    {ok, #st{}}.

%% @private
-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}}.
handle_call(_Request, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast({watch, Specs, Known}, #st{specs = Old, timers = Timers} = St) ->
    Gone = [A || A <- maps:keys(Old), maps:get(A, Specs, none) =/= maps:get(A, Old)],
    _ = [begin
             _ = erlang:cancel_timer(maps:get(A, Timers, make_ref())),
             ets:delete(?TABLE, A)
         end || A <- Gone],
    Timers1 = maps:without(Gone, Timers),
    New = [A || A <- maps:keys(Specs), not maps:is_key(A, Timers1)],
    _ = [ets:insert(?TABLE, {A, unknown}) || A <- New],
    _ = [ets:insert(?TABLE, {A, R}) || {A, R} <- maps:to_list(Known), maps:is_key(A, Specs)],
    Timers2 = lists:foldl(fun(A, Acc) -> Acc#{A => erlang:send_after(0, self(), {check, A})} end,
                          Timers1, New),
    {noreply, St#st{specs = Specs, timers = Timers2}};
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private
-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info({check, App}, #st{specs = Specs, running = Running} = St) ->
    case Specs of
        #{App := Spec} ->
            Self = self(),
            Pid = spawn(fun() -> Self ! {result, self(), App, bc_gitops_health:check(App, Spec)} end),
            {noreply, St#st{running = Running#{Pid => App}}};
        _ ->
            {noreply, St}
    end;
handle_info({result, Pid, App, Result}, #st{specs = Specs, timers = Timers,
                                            running = Running} = St) ->
    St1 = St#st{running = maps:remove(Pid, Running)},
    case Specs of
        #{App := #health_spec{interval = Interval}} ->
            true = ets:insert(?TABLE, {App, Result}),
            %% A change of health is a notification (degraded, recovered).
            ok = bc_gitops_notify:health(App, Result),
            Timer = erlang:send_after(Interval, self(), {check, App}),
            {noreply, St1#st{timers = Timers#{App => Timer}}};
        _ ->
            {noreply, St1}
    end;
handle_info(_Other, St) ->
    {noreply, St}.

%% @private What sys:get_status/1 and crash reports show: credentials and
%% encrypted env values masked (bc_gitops_secrets:format_status/1).
-spec format_status(gen_server:format_status()) -> gen_server:format_status().
format_status(Status) ->
    bc_gitops_secrets:format_status(Status).
