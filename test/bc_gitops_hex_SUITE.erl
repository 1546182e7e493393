%%% Common Test suite for the `hex' source type: builds a hex repository on
%%% disk in the real format (signed gzip'd registry files, version 3
%%% tarballs), serves it with inets httpd on 127.0.0.1 and fetches from it.
-module(bc_gitops_hex_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("public_key/include/public_key.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([protobuf_round_trip/1, protobuf_skips_unknown/1,
         fetch_and_build/1, bad_signature/1, tampered_tarball/1,
         registry_name_mismatch/1, repository_mismatch_via_mirror/1,
         missing_version/1, unsatisfiable_requirement/1, dependency_conflict/1,
         unknown_package/1]).

-define(REPO, <<"test_repo">>).

-import(bc_gitops_hex_repo, [public_pem/1, registry/5, release/6]).

all() ->
    [protobuf_round_trip, protobuf_skips_unknown, fetch_and_build, bad_signature,
     tampered_tarball, registry_name_mismatch, repository_mismatch_via_mirror,
     missing_version, unsatisfiable_requirement, dependency_conflict, unknown_package].

init_per_suite(Config) ->
    Priv = ?config(priv_dir, Config),
    {Repo, Work, Key} = bc_gitops_hex_repo:init(Priv),
    Other = public_key:generate_key({rsa, 2048, 65537}),
    %% hx_dep: four releases; ~> 0.2 must pick 0.2.5.
    DepReleases = [release(Repo, Work, <<"hx_dep">>, V, [], rebar3)
                   || V <- [<<"0.1.0">>, <<"0.2.0">>, <<"0.2.5">>, <<"1.0.0">>]],
    registry(Repo, <<"hx_dep">>, <<"hx_dep">>, DepReleases, Key),
    registry(Repo, <<"hx_app">>, <<"hx_app">>,
             [release(Repo, Work, <<"hx_app">>, <<"1.0.0">>,
                      [{<<"hx_dep">>, <<"~> 0.2">>}], rebar3)], Key),
    %% Signed with another key.
    registry(Repo, <<"hx_badsig">>, <<"hx_badsig">>,
             [release(Repo, Work, <<"hx_badsig">>, <<"1.0.0">>, [], rebar3)], Other),
    %% The tarball changes after the registry recorded its checksum.
    registry(Repo, <<"hx_tampered">>, <<"hx_tampered">>,
             [release(Repo, Work, <<"hx_tampered">>, <<"1.0.0">>, [], rebar3)], Key),
    TarFile = filename:join([Repo, "tarballs", "hx_tampered-1.0.0.tar"]),
    {ok, TarBin} = file:read_file(TarFile),
    ok = file:write_file(TarFile, <<TarBin/binary, 0>>),
    %% /packages/hx_wrongname is hx_dep's (validly signed) registry.
    registry(Repo, <<"hx_wrongname">>, <<"hx_dep">>, DepReleases, Key),
    registry(Repo, <<"hx_needy">>, <<"hx_needy">>,
             [release(Repo, Work, <<"hx_needy">>, <<"1.0.0">>,
                      [{<<"hx_dep">>, <<"~> 2.0">>}], rebar3)], Key),
    registry(Repo, <<"hx_mid">>, <<"hx_mid">>,
             [release(Repo, Work, <<"hx_mid">>, <<"1.0.0">>,
                      [{<<"hx_dep">>, <<"~> 1.0">>}], rebar3)], Key),
    registry(Repo, <<"hx_conf">>, <<"hx_conf">>,
             [release(Repo, Work, <<"hx_conf">>, <<"1.0.0">>,
                      [{<<"hx_dep">>, <<"~> 0.1.0">>}, {<<"hx_mid">>, <<"~> 1.0">>}],
                      rebar3)], Key),
    {Pid, Url} = bc_gitops_hex_repo:serve(Repo, filename:join(Priv, "httpd")),
    [{httpd, Pid}, {url, Url}, {pem, public_pem(Key)} | Config].

end_per_suite(Config) ->
    ok = inets:stop(httpd, ?config(httpd, Config)),
    Config.

%%====================================================================
%% Cases
%%====================================================================

protobuf_round_trip(_Config) ->
    Pkg = #{name => <<"p">>, repository => <<"r">>,
            releases => [#{version => <<"1.0.0">>, inner_checksum => <<1, 2, 3>>,
                           outer_checksum => crypto:strong_rand_bytes(32),
                           retired => #{reason => 3, message => <<"old">>},
                           dependencies => [#{package => <<"d">>, requirement => <<"~> 1.0">>,
                                              optional => true, app => <<"d_app">>,
                                              repository => <<"r">>}]},
                         #{version => <<"2.0.0">>, inner_checksum => <<>>,
                           dependencies => []}]},
    {ok, Pkg} = bc_gitops_protobuf:decode_package(bc_gitops_protobuf:encode_package(Pkg)),
    Big = binary:copy(<<"x">>, 300),
    Signed = #{payload => Big, signature => <<0, 255>>},
    {ok, Signed} = bc_gitops_protobuf:decode_signed(bc_gitops_protobuf:encode_signed(Signed)),
    {error, {bad_protobuf, truncated}} =
        bc_gitops_protobuf:decode_signed(binary:part(bc_gitops_protobuf:encode_signed(Signed),
                                                     0, 10)),
    {error, {bad_protobuf, {missing_field, 'Signed', payload}}} =
        bc_gitops_protobuf:decode_signed(<<>>),
    ok.

protobuf_skips_unknown(_Config) ->
    %% Field 6 (advisories), a varint field 9, fixed32 field 10 and fixed64
    %% field 11 are skipped.
    Rel = <<(bc_gitops_protobuf:encode_package(
               #{releases => [#{version => <<"1.0.0">>, inner_checksum => <<7>>}]}))/binary>>,
    <<10, Len, RelBody:Len/binary>> = Rel,
    Extra = <<50, 3, "adv", 72, 150, 1, 85, 1, 2, 3, 4, 89, 1, 2, 3, 4, 5, 6, 7, 8>>,
    Body = <<RelBody/binary, Extra/binary>>,
    Bin = <<10, (byte_size(Body)), Body/binary, 18, 1, "n">>,
    {ok, #{name := <<"n">>, releases := [#{version := <<"1.0.0">>, inner_checksum := <<7>>,
                                          dependencies := []} = R]}} =
        bc_gitops_protobuf:decode_package(Bin),
    false = maps:is_key(retired, R),
    {ok, [{1, {bytes, _}}, {2, {bytes, <<"n">>}}]} = bc_gitops_protobuf:decode_fields(Bin),
    ok.

fetch_and_build(Config) ->
    Dest = dest(Config, "build"),
    {ok, #{source_dir := Source, tool := rebar3, deps := Deps}} =
        bc_gitops_hex:fetch(<<"hx_app">>, <<"1.0.0">>, Dest, opts(Config)),
    ?assertEqual(filename:join(Dest, "hx_app"), Source),
    DepDir = filename:join([Dest, "deps", "hx_dep"]),
    ?assertEqual([{<<"hx_dep">>, <<"0.2.5">>, DepDir}], Deps),
    {ok, Link} = file:read_link(filename:join([Source, "_checkouts", "hx_dep"])),
    ?assertEqual(DepDir, Link),
    {ok, Src} = file:read_file(filename:join([DepDir, "src", "hx_dep.erl"])),
    {match, _} = re:run(Src, <<"0.2.5">>),
    {ok, _} = bc_gitops_exec:run("rebar3", ["as", "prod", "compile"],
                                 #{cd => Source, env => [{"REBAR_OFFLINE", "1"}],
                                   timeout => 300000}),
    [DepBeam] = filelib:wildcard(filename:join(Source, "_build/prod/**/ebin/hx_dep.beam")),
    [AppBeam] = filelib:wildcard(filename:join(Source, "_build/prod/**/ebin/hx_app.beam")),
    true = code:add_patha(filename:dirname(DepBeam)),
    true = code:add_patha(filename:dirname(AppBeam)),
    try
        ?assertEqual(<<"0.2.5">>, hx_dep:version()),
        ?assertEqual({hx_app, <<"0.2.5">>}, hx_app:hello())
    after
        _ = code:del_path(filename:dirname(DepBeam)),
        _ = code:del_path(filename:dirname(AppBeam))
    end.

bad_signature(Config) ->
    ?assertEqual({error, {bad_signature, <<"hx_badsig">>}},
                 bc_gitops_hex:fetch(<<"hx_badsig">>, <<"1.0.0">>, dest(Config, "sig"),
                                     opts(Config))).

tampered_tarball(Config) ->
    Dest = dest(Config, "tampered"),
    ?assertEqual({error, {checksum_mismatch, outer, <<"hx_tampered">>, <<"1.0.0">>}},
                 bc_gitops_hex:fetch(<<"hx_tampered">>, <<"1.0.0">>, Dest, opts(Config))),
    ?assertEqual([], filelib:wildcard(filename:join(Dest, "*"))).

registry_name_mismatch(Config) ->
    ?assertEqual({error, {registry_mismatch, name, <<"hx_wrongname">>, <<"hx_dep">>}},
                 bc_gitops_hex:fetch(<<"hx_wrongname">>, <<"0.2.5">>, dest(Config, "name"),
                                     opts(Config))).

%% No repo_url: $HEX_MIRROR is used, and checked as a mirror of "hexpm".
repository_mismatch_via_mirror(Config) ->
    os:putenv("HEX_MIRROR", binary_to_list(?config(url, Config))),
    try
        Opts = maps:without([repo_url, repo_name], opts(Config)),
        ?assertEqual({error, {registry_mismatch, repository, <<"hexpm">>, ?REPO}},
                     bc_gitops_hex:fetch(<<"hx_dep">>, <<"0.2.5">>, dest(Config, "mirror"),
                                         Opts))
    after
        os:unsetenv("HEX_MIRROR")
    end.

missing_version(Config) ->
    ?assertEqual({error, {version_not_found, <<"hx_dep">>, <<"9.9.9">>}},
                 bc_gitops_hex:fetch(<<"hx_dep">>, <<"9.9.9">>, dest(Config, "missing"),
                                     opts(Config))).

unsatisfiable_requirement(Config) ->
    ?assertEqual({error, {no_matching_version, <<"hx_dep">>, <<"~> 2.0">>}},
                 bc_gitops_hex:fetch(<<"hx_needy">>, <<"1.0.0">>, dest(Config, "needy"),
                                     opts(Config))).

dependency_conflict(Config) ->
    ?assertEqual({error, {dependency_conflict, <<"hx_dep">>,
                          [{<<"hx_conf">>, <<"~> 0.1.0">>}, {<<"hx_mid">>, <<"~> 1.0">>}]}},
                 bc_gitops_hex:fetch(<<"hx_conf">>, <<"1.0.0">>, dest(Config, "conflict"),
                                     opts(Config))).

unknown_package(Config) ->
    ?assertEqual({error, {package_not_found, <<"hx_nothing">>}},
                 bc_gitops_hex:fetch(<<"hx_nothing">>, <<"1.0.0">>, dest(Config, "unknown"),
                                     opts(Config))).

%%====================================================================
%% Helpers
%%====================================================================

opts(Config) ->
    bc_gitops_hex_repo:fetch_opts(?config(url, Config), ?config(pem, Config)).

dest(Config, Name) ->
    D = filename:join(?config(priv_dir, Config), "dest_" ++ Name),
    ok = filelib:ensure_path(D),
    D.
