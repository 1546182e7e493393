%%% @doc Emits bc_gitops' telemetry events through `telemetry' when that
%%% application is loaded: bc_gitops has no hard dependency on it.
%%%
%%% Every event also goes, loaded or not, to bc_gitops' own observers, in
%%% the emitting process and without waiting on any other: the Prometheus
%%% counters ({@link bc_gitops_metrics}), the status page's latest events
%%% ({@link bc_gitops_events}) and the outgoing notifications
%%% ({@link bc_gitops_notify}, a cast when it runs).
%%%
%%% Durations are in native time units (`erlang:monotonic_time/0'), as
%%% telemetry's span convention has them; convert with
%%% `erlang:convert_time_unit/3'. A handler that crashes is telemetry's
%%% business (it detaches it); it never reaches the reconciler.
-module(bc_gitops_telemetry).

-export([execute/3, span/3]).

%% @doc Emits `Event' when `telemetry' is loaded.
-spec execute([atom(), ...], map(), map()) -> ok.
execute(Event, Measurements, Metadata) ->
    ok = bc_gitops_metrics:observe(Event, Measurements, Metadata),
    ok = bc_gitops_events:observe(Event, Measurements, Metadata),
    ok = bc_gitops_notify:observe(Event, Measurements, Metadata),
    case erlang:module_loaded(telemetry) of
        true -> emit(telemetry, Event, Measurements, Metadata);
        false -> ok
    end.

%% The module is a variable so that neither xref nor dialyzer asks for a
%% dependency that bc_gitops deliberately does not have.
-spec emit(module(), [atom(), ...], map(), map()) -> ok.
emit(Telemetry, Event, Measurements, Metadata) ->
    _ = Telemetry:execute(Event, Measurements, Metadata),
    ok.

%% @doc Runs `Fun' between `Prefix ++ [start]' and `Prefix ++ [stop]'
%% events. `Fun' returns `{Result, ExtraStopMetadata}'; the stop event
%% carries `duration' and the start metadata merged with the extra. An
%% exception emits `Prefix ++ [exception]' and is re-raised.
-spec span([atom(), ...], map(), fun(() -> {Result, map()})) -> Result.
span(Prefix, Metadata, Fun) ->
    Start = erlang:monotonic_time(),
    execute(Prefix ++ [start], #{monotonic_time => Start, system_time => erlang:system_time()},
            Metadata),
    try Fun() of
        {Result, Extra} ->
            Duration = erlang:monotonic_time() - Start,
            execute(Prefix ++ [stop], #{duration => Duration}, maps:merge(Metadata, Extra)),
            Result
    catch
        Class:Reason:Stack ->
            Duration = erlang:monotonic_time() - Start,
            execute(Prefix ++ [exception], #{duration => Duration},
                    Metadata#{kind => Class, reason => Reason, stacktrace => Stack}),
            erlang:raise(Class, Reason, Stack)
    end.
