%%% A minimal stand-in for the telemetry package (which cannot be installed
%%% here: no hex), with the same execute/3, attach/4, attach_many/4 and
%%% detach/1 API. Test code only; bc_gitops itself emits through whatever
%%% `telemetry' module is loaded.
-module(telemetry).

-export([attach/4, attach_many/4, detach/1, execute/3]).

-define(KEY, {?MODULE, handlers}).

attach(Id, Event, Fun, Config) ->
    attach_many(Id, [Event], Fun, Config).

attach_many(Id, Events, Fun, Config) ->
    Handlers = persistent_term:get(?KEY, []),
    case lists:keymember(Id, 1, Handlers) of
        true -> {error, already_exists};
        false -> persistent_term:put(?KEY, [{Id, Events, Fun, Config} | Handlers]), ok
    end.

detach(Id) ->
    persistent_term:put(?KEY, lists:keydelete(Id, 1, persistent_term:get(?KEY, []))),
    ok.

execute(Event, Measurements, Metadata) ->
    [catch Fun(Event, Measurements, Metadata, Config)
     || {_, Events, Fun, Config} <- persistent_term:get(?KEY, []), lists:member(Event, Events)],
    ok.
