%%% A custom health check for the reconciler's tests: an app is healthy
%%% when the version bc_gitops_test_runtime runs of it was declared healthy
%%% with healthy/2.
-module(bc_gitops_test_health).

-include("bc_gitops.hrl").

-export([check/1, healthy/2, reset/0]).

%% Declares App healthy at Version.
healthy(App, Version) ->
    persistent_term:put({?MODULE, App}, [Version | versions(App)]).

reset() ->
    _ = [persistent_term:erase(K) || {{?MODULE, _} = K, _} <- persistent_term:get()],
    ok.

check(App) ->
    {ok, States} = bc_gitops_test_runtime:get_current_state(),
    case States of
        #{App := #app_state{version = V}} ->
            case lists:member(V, versions(App)) of
                true -> ok;
                false -> {error, {not_healthy_at, V}}
            end;
        _ ->
            {error, not_running}
    end.

versions(App) ->
    persistent_term:get({?MODULE, App}, []).
