%%% @doc Changes asked for by hand, bypassing git: `bc_gitops:deploy/1',
%%% `remove/1', `upgrade/2', and `rollback/1', which takes an app back
%%% to the spec that ran before its last change.
%%%
%%% They run in the reconciler's worker, one at a time with reconciles,
%%% and each goes into the history ({@link bc_gitops_history}) with no
%%% commit. A rollback uses the runtime's `upgrade/2' towards the older
%%% version (the default runtime keeps the previous build, so it is hot
%%% where possible, with no fetch and no build), or `reconfigure/1' when
%%% the last change only changed the env. It opens no health gate: it goes
%%% back to what ran. The reconciler then pins the app
%%% ({@link bc_gitops_pins}).
-module(bc_gitops_manual).

-include("bc_gitops.hrl").

-export([run/2, rollback/2]).

%% What a job is given by the reconciler: its config, where history
%% entries go, and for a rollback the app's last change.
-type context() :: #{config := bc_gitops_config:config(), sink := pid() | undefined,
                     change => bc_gitops_history:change() | none, _ => _}.

-export_type([context/0]).

%% @doc Runs `Action' now and records it.
-spec run(bc_gitops_plan:action(), context()) -> ok | {error, term()}.
run(Action, #{config := #{runtime_module := Runtime}} = Ctx) ->
    State = before_state(bc_gitops_action:app(Action), Runtime),
    {Result, Facts} = bc_gitops_action:timed(Runtime, Action),
    record(Action, Result, Facts, State, #{}, Ctx),
    Result.

%% @doc Takes `App' back to the spec that ran before its last change (in
%% `Ctx': `change'). `{ok, #{app, from, to, path}}', or why not:
%% `not_found' (the runtime does not run it), `{no_previous_version, App}'
%% (its last change was its first deploy, or none is known),
%% `{already_rolled_back, App}' (its last change was a rollback: unpin it
%% to follow git again), or the runtime's error.
-spec rollback(atom(), context()) -> {ok, map()} | {error, term()}.
rollback(App, #{config := #{runtime_module := Runtime}} = Ctx) ->
    case {before_state(App, Runtime), maps:get(change, Ctx, none)} of
        {undefined, _} ->
            {error, not_found};
        {_, #{action := rollback}} ->
            {error, {already_rolled_back, App}};
        {#app_state{version = V} = State, #{before := #app_spec{} = Before}} ->
            Action = case Before of
                         #app_spec{version = V} -> {reconfigure, Before};
                         _ -> {upgrade, Before, V}
                     end,
            {Result, #{path := Path} = Facts} = bc_gitops_action:timed(Runtime, Action),
            record(Action, Result, Facts, State, #{action => rollback}, Ctx),
            case Result of
                ok -> {ok, #{app => App, from => V, to => Before#app_spec.version, path => Path}};
                Error -> Error
            end;
        {_, _} ->
            {error, {no_previous_version, App}}
    end.

-spec record(bc_gitops_plan:action(), ok | {error, term()}, bc_gitops_history:facts(),
             #app_state{} | undefined, map(), context()) -> ok.
record(Action, Result, Facts, State, Extra, #{config := Config, sink := Sink} = Ctx) ->
    From = case State of
               #app_state{version = V} -> V;
               undefined -> undefined
           end,
    Node = case Config of
               #{cluster := #{}} -> #{node => node()};
               _ -> #{}
           end,
    Entry = bc_gitops_history:entry(Action, Result, Facts,
                                    maps:merge(#{commit => undefined, from => From},
                                               maps:merge(Node, Extra))),
    Previous = case maps:get(change, Ctx, none) of
                   #{'after' := After} -> After;
                   none -> undefined
               end,
    bc_gitops_history:record(Sink, Entry, bc_gitops_history:change(Action, Result, {State, Previous})).

%% The app as the runtime has it now; `undefined' when it does not, or
%% the runtime cannot say.
-spec before_state(atom(), module()) -> #app_state{} | undefined.
before_state(App, Runtime) ->
    try maps:get(App, bc_gitops_pass:current_state(Runtime), undefined)
    catch throw:{step_failed, _} -> undefined
    end.
