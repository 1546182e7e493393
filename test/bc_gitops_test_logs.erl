%%% Every log line of the node while a test runs, formatted: a logger
%%% handler that keeps them in an ETS table, for tests that check what is
%%% logged (and what never is).
-module(bc_gitops_test_logs).

-export([capture/0, stop/0, lines/0]).
-export([log/2]).

-define(TABLE, bc_gitops_test_logs).

%% Starts keeping lines (forgetting those kept before).
capture() ->
    case ets:whereis(?TABLE) of
        undefined ->
            Self = self(),
            spawn(fun() ->
                          ets:new(?TABLE, [named_table, public, ordered_set]),
                          Self ! {?MODULE, ready},
                          receive stop -> ok end
                  end),
            receive {?MODULE, ready} -> ok end;
        _ ->
            ets:delete_all_objects(?TABLE)
    end,
    _ = logger:remove_handler(?MODULE),
    ok = logger:add_handler(?MODULE, ?MODULE, #{level => all}).

stop() ->
    _ = logger:remove_handler(?MODULE),
    ok.

lines() ->
    [L || {_, L} <- ets:tab2list(?TABLE)].

%% The handler.
log(Event, _Config) ->
    Text = logger_formatter:format(Event, #{single_line => true, template => [msg]}),
    ets:insert(?TABLE, {erlang:unique_integer([monotonic]), unicode:characters_to_binary(Text)}).
