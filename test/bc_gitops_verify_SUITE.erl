%%% `verify': only commits signed by an allowed key are applied. Commits
%%% signed with ssh keys and gpg keys by `git commit -S' in a real
%%% repository, a reconciler with the test runtime; every case asserts what
%%% runs on the node afterwards.
-module(bc_gitops_verify_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([ssh_signed_then_unsigned_then_signed/1, gpg_keys_unknown_revoked_expired/1,
         edited_commit_object/1, force_pushed_history/1, signed_tag_of_unsigned_commit/1,
         restart_keeps_refusing/1, coordinator_refuses_too/1, bad_verify_option/1]).

-import(bc_gitops_test_keys, [signed_commit/3]).

all() ->
    [ssh_signed_then_unsigned_then_signed, gpg_keys_unknown_revoked_expired,
     edited_commit_object, force_pushed_history, signed_tag_of_unsigned_commit,
     restart_keeps_refusing, coordinator_refuses_too, bad_verify_option].

%% One set of keys for the suite: alice and mallory (ssh), carol, mallory,
%% revoked (gpg) and old (a gpg key that expired in 2020).
init_per_suite(Config) ->
    ok = bc_gitops_test_runtime:start(),
    Keys = bc_gitops_test_util:tmp_dir("ct_verify_keys"),
    Alice = bc_gitops_test_keys:ssh_key(Keys, "alice"),
    Mallory = bc_gitops_test_keys:ssh_key(Keys, "mallory"),
    Gpg = bc_gitops_test_keys:gpg_home(Keys, "gnupg"),
    [ok = bc_gitops_test_keys:gpg_key(Gpg, U, "never")
     || U <- ["carol@example.org", "mallory@example.org", "revoked@example.org"]],
    Old = bc_gitops_test_keys:gpg_home(Keys, "old-gnupg"),
    ok = bc_gitops_test_keys:gpg_fake_time(Old, "20200101T000000"),
    ok = bc_gitops_test_keys:gpg_key(Old, "old@example.org", "1d"),
    ok = bc_gitops_test_keys:gpg_fake_time(Old, "20200101T120000"),
    [{keys, Keys}, {alice, {ssh, Alice}}, {mallory_ssh, {ssh, Mallory}},
     {carol, {gpg, Gpg, "carol@example.org"}}, {mallory_gpg, {gpg, Gpg, "mallory@example.org"}},
     {revoked, {gpg, Gpg, "revoked@example.org"}}, {old, {gpg, Old, "old@example.org"}},
     {allowed_signers, bc_gitops_test_keys:allowed_signers(Keys, [{"alice@example.org", Alice}])},
     {gnupg, Gpg}, {old_gnupg, Old} | Config].

end_per_suite(Config) ->
    ok = bc_gitops_test_keys:gpg_stop(?config(gnupg, Config)),
    ok = bc_gitops_test_keys:gpg_stop(?config(old_gnupg, Config)),
    bc_gitops_test_util:rm_rf(?config(keys, Config)).

init_per_testcase(_Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_verify"),
    Origin = filename:join(Dir, "origin"),
    ok = bc_gitops_test_util:init_repo(Origin),
    ets:delete_all_objects(bc_gitops_test_runtime_apps),
    ok = bc_gitops_test_runtime:clear_calls(),
    {ok, _} = application:ensure_all_started(bc_gitops),
    Self = self(),
    ok = telemetry:attach(verify_events, [bc_gitops, verify, stop],
                          fun(E, M, Meta, _) -> Self ! {event, E, M, Meta} end, none),
    [{dir, Dir}, {origin, Origin}, {local_path, filename:join(Dir, "state")} | Config].

end_per_testcase(_Case, Config) ->
    telemetry:detach(verify_events),
    ok = application:stop(bc_gitops),
    [application:unset_env(bc_gitops, K) || {K, _} <- application:get_all_env(bc_gitops)],
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%%% Cases

ssh_signed_then_unsigned_then_signed(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "1.0.0"),
    C1 = signed_commit(Origin, ?config(alice, Config), "v1"),
    start(Config, #{allowed_signers => ?config(allowed_signers, Config)}),
    ?assertEqual(ok, bc_gitops:reconcile()),
    ?assertEqual(<<"1.0.0">>, running()),
    _ = calls(),
    [{_, #{duration := D}, #{result := ok, commit := C1,
                              signer := #{format := ssh, object := commit,
                                          principal := <<"alice@example.org">>}}} | _] = events(),
    ?assert(is_integer(D) andalso D >= 0),

    %% An unsigned commit on top of a signed one: nothing of it is applied.
    spec(Origin, "2.0.0"),
    C2 = signed_commit(Origin, none, "v2, unsigned"),
    ?assertMatch({error, {unverified_commit, C2, {unsigned, _}}}, bc_gitops:reconcile()),
    ?assertEqual(<<"1.0.0">>, running()),
    ?assertEqual([], calls()),
    {ok, Status} = bc_gitops:status(),
    ?assertMatch(#{status := error, last_commit := C1,
                   last_error := {unverified_commit, C2, {unsigned, _}}}, Status),
    [{_, _, #{result := {error, {unsigned, _}}, commit := C2}} | _] = events(),
    %% The checkout of C2 is there, for inspection.
    {ok, Checked} = file:read_file(filename:join([?config(local_path, Config), "repo", "apps",
                                                  "web", "app.config"])),
    ?assertNotEqual(nomatch, binary:match(Checked, <<"2.0.0">>)),
    %% The desired state is still the last verified one.
    {ok, #{web := #app_spec{version = <<"1.0.0">>}}} = bc_gitops:get_desired_state(),
    %% Signed by a key that is not in allowed_signers.
    spec(Origin, "2.0.1"),
    C3 = signed_commit(Origin, ?config(mallory_ssh, Config), "v2.0.1 by mallory"),
    ?assertMatch({error, {unverified_commit, C3, {unknown_key, _}}}, bc_gitops:reconcile()),
    ?assertEqual(<<"1.0.0">>, running()),

    %% A later properly signed commit is applied as usual.
    spec(Origin, "3.0.0"),
    C4 = signed_commit(Origin, ?config(alice, Config), "v3"),
    ?assertEqual(ok, bc_gitops:reconcile()),
    ?assertEqual(<<"3.0.0">>, running()),
    ?assertMatch({ok, #{status := synced, last_commit := C4, last_error := undefined}},
                 bc_gitops:status()).

gpg_keys_unknown_revoked_expired(Config) ->
    Origin = ?config(origin, Config),
    Gpg = ?config(gnupg, Config),
    Keys = bc_gitops_test_keys:gpg_export(
             filename:join(?config(dir, Config), "gpg_keys.asc"),
             [{Gpg, "carol@example.org"}, {Gpg, "revoked@example.org"},
              {?config(old_gnupg, Config), "old@example.org"}]),
    spec(Origin, "1.0.0"),
    _ = signed_commit(Origin, ?config(carol, Config), "v1"),
    start(Config, #{gpg_keys => Keys}),
    ?assertEqual(ok, bc_gitops:reconcile()),
    ?assertEqual(<<"1.0.0">>, running()),
    _ = calls(),
    [{_, _, #{result := ok, signer := #{format := openpgp, principal := <<"carol@example.org">>}}}
     | _] = events(),
    %% An ssh-signed commit while only gpg_keys are configured, a gpg key
    %% not in the file, an expired key, a key revoked after it signed.
    Cases = [{mallory_gpg, unknown_key}, {alice, unknown_key}, {old, expired_key},
             {revoked, revoked_key}],
    lists:foreach(
      fun({Signer, Kind}) ->
              spec(Origin, atom_to_list(Signer)),
              C = signed_commit(Origin, ?config(Signer, Config), atom_to_list(Signer)),
              Signer =:= revoked andalso begin
                                          ok = bc_gitops_test_keys:gpg_revoke(Gpg, "revoked@example.org"),
                                          _ = bc_gitops_test_keys:gpg_export(Keys, [{Gpg, "carol@example.org"},
                                                                                    {Gpg, "revoked@example.org"}])
                                      end,
              ?assertMatch({error, {unverified_commit, C, {Kind, _}}}, bc_gitops:reconcile(),
                           Signer),
              ?assertEqual(<<"1.0.0">>, running())
      end, Cases),
    ?assertEqual([], calls()),
    spec(Origin, "2.0.0"),
    _ = signed_commit(Origin, ?config(carol, Config), "v2"),
    ?assertEqual(ok, bc_gitops:reconcile()),
    ?assertEqual(<<"2.0.0">>, running()).

edited_commit_object(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "1.0.0"),
    _ = signed_commit(Origin, ?config(alice, Config), "v1"),
    start(Config, #{allowed_signers => ?config(allowed_signers, Config)}),
    ok = bc_gitops:reconcile(),
    _ = calls(),
    spec(Origin, "2.0.0"),
    _ = signed_commit(Origin, ?config(alice, Config), "v2"),
    %% The signed v2 commit object, rewritten to point at another tree (one
    %% with version 6.6.6), its signature kept: what a forger with push
    %% access but no key would try.
    spec(Origin, "6.6.6"),
    _ = bc_gitops_test_util:git(Origin, ["add", "-A"]),
    Tree = string:trim(bc_gitops_test_util:git(Origin, ["write-tree"])),
    Raw = bc_gitops_test_util:git(Origin, ["cat-file", "commit", "HEAD"]),
    [<<"tree ", _:40/binary>>, Rest] = binary:split(Raw, <<"\n">>),
    Forged = filename:join(?config(dir, Config), "forged"),
    ok = file:write_file(Forged, [<<"tree ">>, Tree, <<"\n">>, Rest]),
    Id = string:trim(bc_gitops_test_util:git(Origin, ["hash-object", "-t", "commit", "-w", Forged])),
    _ = bc_gitops_test_util:git(Origin, ["reset", "-q", "--hard", Id]),
    ?assertMatch({error, {unverified_commit, Id, {bad_signature, _}}}, bc_gitops:reconcile()),
    ?assertEqual(<<"1.0.0">>, running()),
    ?assertEqual([], calls()).

force_pushed_history(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "1.0.0"),
    _ = signed_commit(Origin, ?config(alice, Config), "v1"),
    spec(Origin, "2.0.0"),
    _ = signed_commit(Origin, ?config(alice, Config), "v2"),
    start(Config, #{allowed_signers => ?config(allowed_signers, Config)}),
    ok = bc_gitops:reconcile(),
    ?assertEqual(<<"2.0.0">>, running()),
    %% History rewritten: v2 replaced by an unsigned commit.
    _ = bc_gitops_test_util:git(Origin, ["reset", "-q", "--hard", "HEAD~1"]),
    spec(Origin, "9.9.9"),
    Forced = signed_commit(Origin, none, "rewritten"),
    ?assertMatch({error, {unverified_commit, Forced, {unsigned, _}}}, bc_gitops:reconcile()),
    ?assertEqual(<<"2.0.0">>, running()),
    %% Rewritten again, signed: applied.
    _ = bc_gitops_test_util:git(Origin, ["reset", "-q", "--hard", "HEAD~1"]),
    spec(Origin, "3.0.0"),
    _ = signed_commit(Origin, ?config(alice, Config), "v3"),
    ?assertEqual(ok, bc_gitops:reconcile()),
    ?assertEqual(<<"3.0.0">>, running()).

signed_tag_of_unsigned_commit(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "1.0.0"),
    _ = signed_commit(Origin, none, "v1, unsigned"),
    {ssh, Alice} = ?config(alice, Config),
    _ = bc_gitops_test_util:git(Origin, ["-c", "gpg.format=ssh", "-c", "user.signingkey=" ++ Alice,
                                         "-c", "user.name=t", "-c", "user.email=t@t",
                                         "tag", "-s", "-m", "release 1", "release-1"]),
    start(Config, #{allowed_signers => ?config(allowed_signers, Config)},
          #{branch => <<"release-1">>}),
    ?assertEqual(ok, bc_gitops:reconcile()),
    ?assertEqual(<<"1.0.0">>, running()),
    [{_, _, #{result := ok, signer := #{object := tag}}} | _] = events(),
    %% The same commit by its branch: unsigned, refused.
    {ok, _} = bc_gitops:start_reconciler(options(Config, #{allowed_signers =>
                                                               ?config(allowed_signers, Config)},
                                                 #{})),
    ?assertMatch({error, {unverified_commit, _, {unsigned, _}}}, bc_gitops:reconcile()).

restart_keeps_refusing(Config) ->
    Origin = ?config(origin, Config),
    Verify = #{allowed_signers => ?config(allowed_signers, Config)},
    spec(Origin, "1.0.0"),
    C1 = signed_commit(Origin, ?config(alice, Config), "v1"),
    start(Config, Verify),
    ok = bc_gitops:reconcile(),
    spec(Origin, "2.0.0"),
    C2 = signed_commit(Origin, none, "v2"),
    {error, {unverified_commit, C2, _}} = bc_gitops:reconcile(),
    _ = calls(),
    %% A new reconciler (as after a node restart) finds the unverified
    %% commit already checked out: still refused.
    ok = bc_gitops:stop_reconciler(),
    start(Config, Verify),
    ?assertMatch({ok, #{status := error, last_commit := C1,
                        last_error := {unverified_commit, C2, {unsigned, _}}}},
                 bc_gitops:status()),
    ?assertEqual(<<"1.0.0">>, running()),
    ?assertEqual([], calls()).

%% The cluster's coordinator reads git through bc_gitops_pass:desired/2:
%% it refuses the same commits.
coordinator_refuses_too(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "1.0.0"),
    C1 = signed_commit(Origin, ?config(alice, Config), "v1"),
    {ok, Checked} = bc_gitops_config:from_map(
                      options(Config, #{allowed_signers => ?config(allowed_signers, Config)}, #{})),
    {ok, #{commit := C1, specs := [#app_spec{version = <<"1.0.0">>}]} = Parsed} =
        bc_gitops_pass:desired(Checked, undefined),
    spec(Origin, "2.0.0"),
    C2 = signed_commit(Origin, ?config(mallory_ssh, Config), "v2"),
    ?assertMatch({error, {unverified_commit, C2, {unknown_key, _}}},
                 bc_gitops_pass:desired(Checked, Parsed)).

bad_verify_option(Config) ->
    Base = options(Config, #{}, #{}),
    [?assertMatch({error, {bad_config, verify, _}}, bc_gitops:start_reconciler(Base#{verify => V}))
     || V <- [#{}, #{allowed_signers => ""}, #{ssh => "x"}, "file"]].

%%% Helpers

options(Config, Verify, Extra) ->
    maps:merge(#{repo_url => "file://" ++ ?config(origin, Config),
                 local_path => ?config(local_path, Config),
                 runtime_module => bc_gitops_test_runtime,
                 reconcile_interval => 3600000, verify => Verify}, Extra).

start(Config, Verify) ->
    start(Config, Verify, #{}).

%% Starts a reconciler and waits for its first reconcile to end.
start(Config, Verify, Extra) ->
    {ok, _} = bc_gitops:start_reconciler(options(Config, Verify, Extra)),
    bc_gitops_test_util:wait_reconciled(30000),
    _ = events(),
    ok.

%% The version of `web' the node runs.
running() ->
    {ok, #app_state{version = V}} = bc_gitops:get_app_status(web),
    V.

calls() ->
    Calls = bc_gitops_test_runtime:calls(),
    ok = bc_gitops_test_runtime:clear_calls(),
    Calls.

spec(Repo, Version) ->
    bc_gitops_test_util:write_file(
      filename:join([Repo, "apps", "web", "app.config"]),
      ["#{name => web, version => <<\"", Version, "\">>, source => #{type => hex}}.\n"]).

%% The verify events received so far, the newest first.
events() ->
    drain([]).

drain(Acc) ->
    receive {event, E, M, Meta} -> drain([{E, M, Meta} | Acc])
    after 0 -> Acc
    end.
