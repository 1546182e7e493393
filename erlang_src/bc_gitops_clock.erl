%%% @doc The clock the reconciler reads and sets its timers with.
%%%
%%% Backoffs, retry timers, the reconcile interval and health grace periods
%%% all go through one clock module, named by the `clock' option. This
%%% module is the default: the VM's monotonic clock and `erlang:send_after'.
%%% A test gives its own module (the same three callbacks) to set the time
%%% and assert exact delays, instead of sleeping and counting attempts.
-module(bc_gitops_clock).

-export([now_ms/0, send_after/3, cancel_timer/1, callbacks/0]).

%% Monotonic time in milliseconds.
-callback now_ms() -> integer().
%% Sends `Msg' to `Pid' after `Ms' milliseconds of this clock's time.
-callback send_after(non_neg_integer(), pid(), term()) -> reference().
%% Cancels a timer of `send_after/3'; a fired or unknown one is no error.
-callback cancel_timer(reference()) -> ok.

%% @doc Monotonic milliseconds.
-spec now_ms() -> integer().
now_ms() ->
    erlang:monotonic_time(millisecond).

%% @doc `erlang:send_after/3'.
-spec send_after(non_neg_integer(), pid(), term()) -> reference().
send_after(Ms, Pid, Msg) ->
    erlang:send_after(Ms, Pid, Msg).

%% @doc `erlang:cancel_timer/2', without waiting.
-spec cancel_timer(reference()) -> ok.
cancel_timer(Ref) ->
    ok = erlang:cancel_timer(Ref, [{async, true}, {info, false}]).

%% @doc The callbacks, for checking that a module implements them.
-spec callbacks() -> [{atom(), arity()}].
callbacks() ->
    [{now_ms, 0}, {send_after, 3}, {cancel_timer, 1}].
