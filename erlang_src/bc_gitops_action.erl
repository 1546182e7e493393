%%% @doc Runs one planned action through the runtime, wrapped in its
%%% telemetry span. Used by reconciles and by the manual
%%% `bc_gitops:deploy/1', `remove/1' and `upgrade/2' alike, so both emit the
%%% same events.
%%%
%%% A runtime callback that raises is that app's failure, never the
%%% caller's crash.
-module(bc_gitops_action).

-include("bc_gitops.hrl").

-export([run/2, timed/2, app/1, summary/1]).

-type result() :: {ok, #app_state{}} | {ok, #app_state{}, map()} | ok | {error, term()}.
-export_type([result/0]).

%% @doc The app an action is about.
-spec app(bc_gitops_plan:action()) -> atom().
app({remove, Name}) -> Name;
app(Action) -> (element(2, Action))#app_spec.name.

%% @doc Runs `Action' with `Runtime'. Events (durations in native units):
%% `[bc_gitops, deploy | upgrade | reconfigure | remove, start | stop]';
%% stop carries `app' and `result' (`ok' or `{error, Reason}').
-spec run(module(), bc_gitops_plan:action()) -> result().
run(Runtime, {deploy, Spec}) ->
    span(deploy, #{app => Spec#app_spec.name, version => Spec#app_spec.version},
         fun() -> Runtime:deploy(Spec) end);
run(Runtime, {redeploy, Spec, Why}) ->
    span(deploy, #{app => Spec#app_spec.name, version => Spec#app_spec.version, reason => Why},
         fun() -> Runtime:deploy(Spec) end);
run(Runtime, {upgrade, Spec, From}) ->
    span(upgrade, #{app => Spec#app_spec.name, from_version => From,
                    to_version => Spec#app_spec.version},
         fun() -> Runtime:upgrade(Spec, From) end);
run(Runtime, {reconfigure, Spec}) ->
    span(reconfigure, #{app => Spec#app_spec.name}, fun() -> Runtime:reconfigure(Spec) end);
run(Runtime, {remove, Name}) ->
    span(remove, #{app => Name}, fun() -> Runtime:remove(Name) end).

%% @doc Runs `Action' as {@link run/2} does; its summary, and the facts
%% its history entry is made of ({@link bc_gitops_history}): when it
%% started, how long it took, and the path an upgrade took.
-spec timed(module(), bc_gitops_plan:action()) ->
    {ok | {error, term()}, bc_gitops_history:facts()}.
timed(Runtime, Action) ->
    At = erlang:system_time(millisecond),
    Start = erlang:monotonic_time(millisecond),
    Result = run(Runtime, Action),
    Path = case Result of
               {ok, _, #{path := P}} when P =:= hot; P =:= restart -> P;
               {error, {rolled_back, _}} when element(1, Action) =:= upgrade -> rolled_back;
               _ -> undefined
           end,
    {summary(Result), #{at => At, start => Start, path => Path,
                        duration_ms => erlang:monotonic_time(millisecond) - Start}}.

-spec span(atom(), map(), fun(() -> term())) -> result().
span(Kind, Meta, Call) ->
    bc_gitops_telemetry:span(
      [bc_gitops, Kind], Meta,
      fun() ->
              Result = checked(Call),
              %% An upgrade may say how it went (path, modules, suspension
              %% window): that goes into the stop event too.
              Info = case Result of
                         {ok, _, #{} = I} -> I;
                         {error, {rolled_back, _}} when Kind =:= upgrade -> #{path => rolled_back};
                         _ -> #{}
                     end,
              {Result, Info#{result => summary(Result)}}
      end).

%% Anything but the documented shapes is an error of the runtime's.
-spec checked(fun(() -> term())) -> result().
checked(Call) ->
    try Call() of
        {ok, #app_state{}} = Ok -> Ok;
        {ok, #app_state{}, #{}} = Ok -> Ok;
        ok -> ok;
        {error, _} = Error -> Error;
        Other -> {error, {bad_runtime_return, Other}}
    catch
        Class:Reason:Stack -> {error, {crashed, Class, Reason, Stack}}
    end.

%% @doc `ok' or `{error, Reason}', whatever the callback returned.
-spec summary(result()) -> ok | {error, term()}.
summary({ok, _}) -> ok;
summary({ok, _, _}) -> ok;
summary(ok) -> ok;
summary({error, _} = Error) -> Error.
