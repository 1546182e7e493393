%%% A clock for the tests (the `clock' option): its time stands still until
%%% the test moves it with advance/1, which delivers every timer that has
%%% come due, in order. Backoffs and retries can then be asserted to the
%%% millisecond, without sleeping.
-module(bc_gitops_test_clock).

-behaviour(bc_gitops_clock).

-export([now_ms/0, send_after/3, cancel_timer/1]).
-export([start/0, advance/1, timers/0]).

-define(TABLE, bc_gitops_test_clock).

%% Sets the time to 1,000,000 ms and forgets every timer; the table lives
%% in a process of its own until the node stops.
start() ->
    case ets:whereis(?TABLE) of
        undefined ->
            Self = self(),
            Pid = spawn(fun() ->
                                ets:new(?TABLE, [named_table, public, ordered_set]),
                                Self ! {self(), ready},
                                receive stop -> ok end
                        end),
            receive {Pid, ready} -> ok end;
        _ ->
            ets:delete_all_objects(?TABLE)
    end,
    ets:insert(?TABLE, {now, 1000000}),
    ok.

now_ms() ->
    ets:lookup_element(?TABLE, now, 2).

send_after(Ms, Pid, Msg) ->
    Ref = make_ref(),
    Due = now_ms() + Ms,
    ets:insert(?TABLE, {{timer, Due, erlang:unique_integer([monotonic])}, Ref, Pid, Msg}),
    case Ms of
        0 -> deliver(Due);
        _ -> ok
    end,
    Ref.

cancel_timer(Ref) ->
    ets:match_delete(?TABLE, {'_', Ref, '_', '_'}),
    ok.

%% Moves the time on by Ms and delivers the timers due by then.
advance(Ms) when Ms >= 0 ->
    Now = now_ms() + Ms,
    ets:insert(?TABLE, {now, Now}),
    deliver(Now).

%% The timers set and not fired: [{DueInMs, Msg}], soonest first.
timers() ->
    Now = now_ms(),
    [{Due - Now, Msg} || {{timer, Due, _}, _Ref, _Pid, Msg} <- ets:tab2list(?TABLE)].

deliver(Now) ->
    Due = [T || {{timer, At, _}, _, _, _} = T <- ets:tab2list(?TABLE), At =< Now],
    lists:foreach(fun({Key, _Ref, Pid, Msg}) ->
                          ets:delete(?TABLE, Key),
                          Pid ! Msg
                  end, Due).
