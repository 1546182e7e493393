%%% The coordinator's decisions, step by step, on reports made up as
%%% members would send them: batches, the canary, halts and reverts, the
%%% pause, quorum, dependencies, placement and a takeover.
-module(bc_gitops_rollout_tests).

-include_lib("eunit/include/eunit.hrl").
-include("bc_gitops.hrl").

-define(M, [a@h, b@h, c@h]).

spec(Name, V) -> spec(Name, V, []).
spec(Name, V, Deps) ->
    #app_spec{name = Name, version = V, source = #source_spec{type = hex}, depends_on = Deps}.

d(Spec) -> bc_gitops_rollout:digest(Spec).

%% Every member settled at `Spec' for its app.
settled(Nodes, Spec) ->
    maps:from_list([{N, #{Spec#app_spec.name => at(Spec)}} || N <- Nodes]).

at(Spec) ->
    #{assigned => d(Spec), settled => d(Spec), failed => none, version => Spec#app_spec.version}.

view(Reports, Wants) ->
    #{members => ?M, up => ?M, quorum => true, wants => Wants, keep => [],
      reports => Reports, failed => #{}, now => 1000, max_parallel => 1}.

want_all(Spec) -> maps:from_list([{N, #{Spec#app_spec.name => Spec}} || N <- ?M]).

%% Sets the reports of `Node' for the app of `Spec' (merged).
put(Reports, Node, Spec, Fields) ->
    App = Spec#app_spec.name,
    Old = maps:get(App, maps:get(Node, Reports, #{}), #{}),
    Reports#{Node => (maps:get(Node, Reports, #{}))#{App => maps:merge(Old, Fields)}}.

one_member_at_a_time_test() ->
    V1 = spec(web, <<"1">>), V2 = spec(web, <<"2">>),
    R0 = settled(?M, V1),
    %% The canary: the first member, alone.
    {C1, Rs1, E1, _, _} = bc_gitops_rollout:decide(view(R0, want_all(V2)), #{}),
    ?assertEqual([{set, a@h, web, V2}], C1),
    ?assertMatch(#{web := #{state := running, batch := [a@h], from := <<"1">>, to := <<"2">>}},
                 Rs1),
    ?assertMatch([{start, web, _}, {step, web, #{nodes := [a@h], result := started}}], E1),
    %% a is assigned v2 and has not settled: nothing new starts.
    R1 = put(R0, a@h, V2, #{assigned => d(V2)}),
    ?assertMatch({[], #{web := #{current := [a@h]}}, [], _, _},
                 bc_gitops_rollout:decide(view(R1, want_all(V2)), Rs1)),
    %% a settled: its batch is done, and b goes next.
    R2 = put(R1, a@h, V2, #{settled => d(V2)}),
    {C2, Rs2, E2, _, _} = bc_gitops_rollout:decide(view(R2, want_all(V2)), Rs1),
    ?assertEqual([{set, b@h, web, V2}], C2),
    ?assertMatch([{step, web, #{nodes := [a@h], result := done}},
                  {step, web, #{nodes := [b@h], result := started}}], E2),
    ?assertMatch(#{web := #{done := [a@h], pending := [b@h, c@h]}}, Rs2),
    R3 = put(R2, b@h, V2, #{assigned => d(V2), settled => d(V2)}),
    {[{set, c@h, web, V2}], Rs3, _, _, _} = bc_gitops_rollout:decide(view(R3, want_all(V2)), Rs2),
    R4 = put(R3, c@h, V2, #{assigned => d(V2), settled => d(V2)}),
    {[], Rs4, E4, _, _} = bc_gitops_rollout:decide(view(R4, want_all(V2)), Rs3),
    ?assertMatch(#{web := #{state := done, done := [a@h, b@h, c@h], pending := []}}, Rs4),
    ?assertMatch([{step, web, #{nodes := [c@h], result := done}},
                  {stop, web, #{result := done}}], E4),
    %% Nothing more, and no more events.
    ?assertMatch({[], #{web := #{state := done}}, [], _, _},
                 bc_gitops_rollout:decide(view(R4, want_all(V2)), Rs4)).

max_parallel_from_the_spec_test() ->
    V1 = spec(web, <<"1">>),
    V2 = (spec(web, <<"2">>))#app_spec{rollout = #{max_parallel => 2}},
    {C, _, _, _, _} = bc_gitops_rollout:decide(view(settled(?M, V1), want_all(V2)), #{}),
    ?assertEqual([{set, a@h, web, V2}, {set, b@h, web, V2}], C).

canary_failure_halts_and_reverts_test() ->
    V1 = spec(web, <<"1">>), V2 = spec(web, <<"2">>),
    {[{set, a@h, web, V2}], Rs1, _, _, _} =
        bc_gitops_rollout:decide(view(settled(?M, V1), want_all(V2)), #{}),
    %% a tried v2, it failed (and a rolled itself back to v1).
    R = put(settled(?M, V1), a@h, V2, #{assigned => d(V2), failed => d(V2),
                                       reason => {unhealthy, boom}}),
    {C, Rs2, E, Failed, _} = bc_gitops_rollout:decide(view(R, want_all(V2)), Rs1),
    ?assertEqual([{revert, a@h, web, d(V2)}], C),
    ?assertMatch(#{web := #{state := halted, reason := {unhealthy, boom}}}, Rs2),
    ?assertEqual(#{web => #{digest => d(V2), version => <<"2">>, reason => {unhealthy, boom}}},
                 Failed),
    ?assertMatch([{stop, web, #{result := {halted, {unhealthy, boom}}}}], E),
    %% Reverted: nothing more is sent, b and c never get v2.
    R2 = put(R, a@h, V2, #{assigned => d(V1)}),
    ?assertMatch({[], #{web := #{state := halted}}, [], _, _},
                 bc_gitops_rollout:decide((view(R2, want_all(V2)))#{failed := Failed}, Rs2)),
    %% A new spec ends the halt.
    V3 = spec(web, <<"3">>),
    {C3, _, _, Failed3, _} =
        bc_gitops_rollout:decide((view(R2, want_all(V3)))#{failed := Failed}, Rs2),
    ?assertEqual(#{}, Failed3),
    ?assertEqual([{set, a@h, web, V3}], C3).

%% A halt later in the rollout sends the members already done back.
done_members_go_back_on_a_halt_test() ->
    V1 = spec(web, <<"1">>), V2 = spec(web, <<"2">>),
    R = put(put(settled(?M, V1), a@h, V2, #{assigned => d(V2), settled => d(V2)}),
            b@h, V2, #{assigned => d(V2), failed => d(V2), reason => crashed}),
    {C, _, _, _, _} = bc_gitops_rollout:decide(view(R, want_all(V2)), #{}),
    ?assertEqual(lists:sort([{revert, a@h, web, d(V2)}, {revert, b@h, web, d(V2)}]),
                 lists:sort(C)).

no_batch_without_quorum_test() ->
    V1 = spec(web, <<"1">>), V2 = spec(web, <<"2">>),
    V = (view(settled(?M, V1), want_all(V2)))#{quorum := false},
    ?assertMatch({[], #{web := #{reason := no_quorum, state := running}}, _, _, _},
                 bc_gitops_rollout:decide(V, #{})).

pause_between_batches_test() ->
    V1 = spec(web, <<"1">>),
    V2 = (spec(web, <<"2">>))#app_spec{rollout = #{pause => 500}},
    {[_], Rs1, _, _, _} = bc_gitops_rollout:decide(view(settled(?M, V1), want_all(V2)), #{}),
    R = put(settled(?M, V1), a@h, V2, #{assigned => d(V2), settled => d(V2)}),
    %% Done at 1000: the next batch waits until 1500.
    {[], Rs2, _, _, Wake} = bc_gitops_rollout:decide(view(R, want_all(V2)), Rs1),
    ?assertEqual(1500, Wake),
    ?assertMatch(#{web := #{reason := pause}}, Rs2),
    {[], _, _, _, 1500} = bc_gitops_rollout:decide((view(R, want_all(V2)))#{now := 1499}, Rs2),
    ?assertMatch({[{set, b@h, web, V2}], _, _, _, _},
                 bc_gitops_rollout:decide((view(R, want_all(V2)))#{now := 1500}, Rs2)).

%% A member that goes down in its batch is skipped; the next batch goes on.
down_member_is_skipped_test() ->
    V1 = spec(web, <<"1">>), V2 = spec(web, <<"2">>),
    {[_], Rs1, _, _, _} = bc_gitops_rollout:decide(view(settled(?M, V1), want_all(V2)), #{}),
    R = put(settled(?M, V1), a@h, V2, #{assigned => d(V2)}),
    V = (view(R, want_all(V2)))#{up := [b@h, c@h]},
    ?assertMatch({[{set, b@h, web, V2}], _, _, _, _}, bc_gitops_rollout:decide(V, Rs1)).

%% A new coordinator works out the rollout from the reports: a member
%% assigned the target and not settled is in its batch (not upgraded
%% again), a settled one is done; nothing starts until it settles.
takeover_goes_on_from_the_reports_test() ->
    V1 = spec(web, <<"1">>), V2 = spec(web, <<"2">>),
    R = put(put(settled(?M, V1), a@h, V2, #{assigned => d(V2), settled => d(V2)}),
            b@h, V2, #{assigned => d(V2)}),
    {C, Rs, _, _, _} = bc_gitops_rollout:decide(view(R, want_all(V2)), #{}),
    ?assertEqual([], C),
    ?assertMatch(#{web := #{done := [a@h], current := [b@h], pending := [c@h]}}, Rs).

%% web depends on db, and both change: on each member web waits until db
%% settled there at its target.
dependencies_settle_first_test() ->
    D1 = spec(db, <<"1">>), D2 = spec(db, <<"2">>),
    W1 = spec(web, <<"1">>, [db]), W2 = spec(web, <<"2">>, [db]),
    Wants = maps:from_list([{N, #{db => D2, web => W2}} || N <- ?M]),
    R0 = maps:merge_with(fun(_, A, B) -> maps:merge(A, B) end, settled(?M, D1), settled(?M, W1)),
    {C1, Rs1, _, _, _} = bc_gitops_rollout:decide(view(R0, Wants), #{}),
    ?assertEqual([{set, a@h, db, D2}], C1),
    ?assertMatch(#{web := #{reason := {dependency_not_ready, db}}}, Rs1),
    R1 = put(R0, a@h, D2, #{assigned => d(D2), settled => d(D2)}),
    {C2, _, _, _, _} = bc_gitops_rollout:decide(view(R1, Wants), Rs1),
    ?assertEqual(lists:sort([{set, b@h, db, D2}, {set, a@h, web, W2}]), lists:sort(C2)).

%% An app placed on a only leaves b and c, one batch at a time too.
placement_removes_where_it_no_longer_matches_test() ->
    V1 = spec(web, <<"1">>),
    Wants = #{a@h => #{web => V1}, b@h => #{}, c@h => #{}},
    {C, Rs, _, _, _} = bc_gitops_rollout:decide(view(settled(?M, V1), Wants), #{}),
    ?assertEqual([{set, b@h, web, remove}], C),
    ?assertMatch(#{web := #{done := [a@h], pending := [b@h, c@h]}}, Rs).

%% An app nobody runs yet, new in git: deployed one batch at a time.
new_app_is_rolled_out_test() ->
    V1 = spec(web, <<"1">>),
    ?assertMatch({[{set, a@h, web, V1}], #{web := #{from := undefined, to := <<"1">>}}, _, _, _},
                 bc_gitops_rollout:decide(view(#{}, want_all(V1)), #{})).

%% An app whose spec is invalid or blocked is left alone everywhere.
kept_apps_are_left_alone_test() ->
    V1 = spec(web, <<"1">>),
    V = (view(settled(?M, V1), #{a@h => #{}, b@h => #{}, c@h => #{}}))#{keep := [web]},
    ?assertMatch({[], #{}, [], _, _}, bc_gitops_rollout:decide(V, #{})).

digest_is_the_same_for_equal_specs_test() ->
    ?assertEqual(d(spec(a, <<"1">>)), d(spec(a, <<"1">>))),
    ?assertNotEqual(d(spec(a, <<"1">>)), d(spec(a, <<"2">>))),
    ?assertEqual(none, d(undefined)).
