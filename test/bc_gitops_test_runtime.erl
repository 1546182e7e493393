%%% A bc_gitops_runtime for the reconciler's tests: it keeps "deployed" apps
%%% in an ETS table and logs every call, with knobs to make a deploy slow or
%%% fail. It does not load code: the reconciler is what is under test.
%%%
%%% Its state token (the optional callback) counts the changes of its
%%% table; `set_token(false)' makes it fail, as a runtime without one
%%% (the reconciler then reads the state at every reconcile).
%%% `state_reads()' counts the reads of the state.
-module(bc_gitops_test_runtime).

-behaviour(bc_gitops_runtime).

-include("bc_gitops.hrl").

-export([deploy/1, remove/1, upgrade/2, reconfigure/1, get_current_state/0, state_token/0]).
-export([start/0, calls/0, clear_calls/0, set_delay/1, fail/2, stop_app/1, set_status/2,
         forget_apps/0, set_token/1, state_reads/0]).

-define(APPS, bc_gitops_test_runtime_apps).
-define(CALLS, bc_gitops_test_runtime_calls).

%% Creates the tables (once per node, owned by a process that lives until
%% the node stops) or empties them.
start() ->
    case ets:whereis(?APPS) of
        undefined -> new_tables();
        _ -> ets:delete_all_objects(?APPS), clear_calls()
    end,
    set_delay(0),
    set_token(true),
    persistent_term:put({?MODULE, fail}, #{}),
    %% Kept for the node's life, so that a token is never seen twice.
    _ = persistent_term:get({?MODULE, counters}, undefined) =:= undefined andalso
        persistent_term:put({?MODULE, counters}, counters:new(2, [])),
    ok.

%% Counter 1: changes of the apps table; 2: reads of the state.
changed() -> counters:add(persistent_term:get({?MODULE, counters}), 1, 1).
state_reads() -> counters:get(persistent_term:get({?MODULE, counters}), 2).
set_token(On) -> persistent_term:put({?MODULE, token}, On).

state_token() ->
    true = persistent_term:get({?MODULE, token}),
    counters:get(persistent_term:get({?MODULE, counters}), 1).

%% Runs no app any more.
forget_apps() ->
    ets:delete_all_objects(?APPS),
    changed().

new_tables() ->
    Self = self(),
    Pid = spawn(fun() ->
                        ets:new(?APPS, [named_table, public]),
                        ets:new(?CALLS, [named_table, public, ordered_set]),
                        Self ! {self(), ready},
                        receive stop -> ok end
                end),
    receive {Pid, ready} -> ok end.

calls() -> [C || {_, C} <- ets:tab2list(?CALLS)].
clear_calls() -> ets:delete_all_objects(?CALLS), ok.
set_delay(Ms) -> persistent_term:put({?MODULE, delay}, Ms).
%% fail(App, true): every deploy or upgrade of App fails.
fail(App, On) ->
    Fails = persistent_term:get({?MODULE, fail}),
    persistent_term:put({?MODULE, fail}, Fails#{App => On}).
%% Marks an app stopped, as if someone stopped it by hand.
stop_app(App) ->
    set_status(App, stopped).

%% Reports an app in `Status' from now on (a runtime working in the
%% background says `upgrading' for a while).
set_status(App, Status) ->
    [{App, S}] = ets:lookup(?APPS, App),
    ets:insert(?APPS, {App, S#app_state{status = Status}}),
    changed().

log(Call) -> ets:insert(?CALLS, {erlang:unique_integer([monotonic]), Call}).

deploy(#app_spec{name = N, version = V} = Spec) ->
    log({deploy, N, V}),
    start_app(Spec).

upgrade(#app_spec{name = N, version = V} = Spec, From) ->
    log({upgrade, N, From, V}),
    start_app(Spec).

reconfigure(#app_spec{name = N, env = Env} = Spec) ->
    log({reconfigure, N, Env}),
    start_app(Spec).

remove(Name) ->
    log({remove, Name}),
    ets:delete(?APPS, Name),
    changed().

get_current_state() ->
    counters:add(persistent_term:get({?MODULE, counters}), 2, 1),
    {ok, maps:from_list(ets:tab2list(?APPS))}.

start_app(#app_spec{name = N, version = V, env = Env, depends_on = D}) ->
    timer:sleep(persistent_term:get({?MODULE, delay})),
    case maps:get(N, persistent_term:get({?MODULE, fail}), false) of
        true ->
            {error, {start_failed, N}};
        false ->
            State = #app_state{name = N, version = V, status = running, env = Env,
                               depends_on = D, path = "/nowhere/" ++ atom_to_list(N),
                               started_at = erlang:system_time(millisecond)},
            ets:insert(?APPS, {N, State}),
            changed(),
            {ok, State}
    end.
