// The AWS credentials chain (fetch/aws_credentials.h): the INI files as the AWS CLI reads them,
// and the order keys, region and endpoint are found in, with a fake environment and real files.
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "modelfs/fetch/aws_credentials.h"
#include "modelfs/store/errors.h"
#include "support/test_env.h"

namespace {

using modelfs::ErrorKind;
using modelfs::StoreError;
using modelfs::fetch::aws_settings;
using modelfs::fetch::AwsEnv;
using modelfs::fetch::AwsSettings;
using modelfs::fetch::IniFile;
using modelfs::fetch::parse_aws_ini;
using modelfs::fetch::read_aws_ini;
using modelfs::fetch::S3Config;
using modelfs::testing::TempDir;
using modelfs::testing::write_text_file;

TEST(AwsIni, SectionsKeysAndComments) {
    IniFile ini = parse_aws_ini(
        "# a comment\n"
        "; another\n"
        "ignored = before any section\n"
        "[default]\n"
        "aws_access_key_id = AKDEFAULT\n"
        "  AWS_Secret_Access_Key=  sec ret  \n"
        "\n"
        "[ profile   team ]\r\n"
        "region = eu-west-1\r\n"
        "  # indented comment\n"
        "no equals sign here\n"
        "empty =\n"
        "[default]\n"
        "region = us-west-2\n");
    ASSERT_EQ(ini.size(), 2u);
    EXPECT_EQ(ini["default"]["aws_access_key_id"], "AKDEFAULT");
    // Keys lower-cased, values trimmed (inner spaces kept).
    EXPECT_EQ(ini["default"]["aws_secret_access_key"], "sec ret");
    // A section written twice is one section.
    EXPECT_EQ(ini["default"]["region"], "us-west-2");
    // "[profile   team]": the AWS CLI splits the name on whitespace.
    ASSERT_TRUE(ini.count("profile team"));
    EXPECT_EQ(ini["profile team"]["region"], "eu-west-1");  // CRLF lines
    EXPECT_EQ(ini["profile team"]["empty"], "");
    EXPECT_EQ(ini["profile team"].size(), 2u);
}

TEST(AwsIni, SubSections) {
    IniFile ini = parse_aws_ini(
        "[profile rgw]\n"
        "s3 =\n"
        "  endpoint_url = http://127.0.0.1:7480\n"
        "\tSignature_Version = s3v4\n"
        "region = us-east-1\n"
        "  not_sub = x\n"
        "[profile other]\n"
        "  endpoint_url = http://elsewhere\n");
    const auto& rgw = ini["profile rgw"];
    EXPECT_EQ(rgw.at("s3.endpoint_url"), "http://127.0.0.1:7480");
    EXPECT_EQ(rgw.at("s3.signature_version"), "s3v4");
    EXPECT_EQ(rgw.at("region"), "us-east-1");
    // An indented line below a key with a value opens nothing: it is an ordinary key.
    EXPECT_EQ(rgw.count("region.not_sub"), 0u);
    EXPECT_EQ(rgw.at("not_sub"), "x");
    // A new section ends the sub-section.
    EXPECT_EQ(ini["profile other"].at("endpoint_url"), "http://elsewhere");
}

TEST(AwsIni, MalformedSectionLinesBelongToNone) {
    IniFile ini = parse_aws_ini("[broken\nkey = v\n[ok]\nk = 1");
    EXPECT_EQ(ini.size(), 1u);
    EXPECT_EQ(ini["ok"]["k"], "1");  // the last line has no newline
}

TEST(AwsIni, ReadMissingAndUnreadable) {
    TempDir dir("modelfs-aws");
    EXPECT_TRUE(read_aws_ini((dir / "none").string()).empty());
    write_text_file(dir / "creds", "[a]\naws_access_key_id = X\n");
    EXPECT_EQ(read_aws_ini((dir / "creds").string())["a"]["aws_access_key_id"], "X");
    // A directory cannot be read as a file: an error naming it, not an empty file.
    try {
        read_aws_ini(dir.path().string());
        ADD_FAILURE() << "a directory was read";
    } catch (const StoreError& e) {
        EXPECT_NE(std::string(e.what()).find(dir.path().string()), std::string::npos) << e.what();
    }
    if (::geteuid() != 0) {
        ::chmod((dir / "creds").c_str(), 0);
        EXPECT_THROW(read_aws_ini((dir / "creds").string()), StoreError);
    }
}

// A fake environment, and the AWS files in a temp dir pointed at by the variables.
class AwsChain : public ::testing::Test {
  protected:
    void SetUp() override {
        env_["AWS_SHARED_CREDENTIALS_FILE"] = (dir_ / "credentials").string();
        env_["AWS_CONFIG_FILE"] = (dir_ / "config").string();
    }
    AwsEnv env() const {
        return [this](const std::string& n) -> std::optional<std::string> {
            auto it = env_.find(n);
            if (it == env_.end()) return std::nullopt;
            return it->second;
        };
    }
    AwsSettings settings(const std::string& profile = "", const std::string& region = "",
                         const std::string& endpoint = "") const {
        return aws_settings(profile, region, endpoint, fallback_, env());
    }
    void credentials(const std::string& text) { write_text_file(dir_ / "credentials", text); }
    void config(const std::string& text) { write_text_file(dir_ / "config", text); }

    TempDir dir_{"modelfs-aws"};
    std::map<std::string, std::string> env_;
    S3Config fallback_;
};

TEST_F(AwsChain, NothingAnywhereIsUnsignedInUsEast1) {
    AwsSettings s = settings();
    EXPECT_EQ(s.credentials.access_key, "");
    EXPECT_EQ(s.credentials.origin, "");
    EXPECT_EQ(s.region, "us-east-1");
    EXPECT_EQ(s.endpoint, "");
    EXPECT_EQ(s.profile, "default");
}

TEST_F(AwsChain, KeysEnvironmentThenCredentialsThenConfigThenFallback) {
    fallback_.access_key = "AKFALLBACK";
    fallback_.secret_key = "SFALLBACK";
    EXPECT_EQ(settings().credentials.access_key, "AKFALLBACK");
    EXPECT_EQ(settings().credentials.origin, "modelfs config [s3]");

    config("[default]\naws_access_key_id = AKCONFIG\naws_secret_access_key = SCONFIG\n");
    EXPECT_EQ(settings().credentials.access_key, "AKCONFIG");
    EXPECT_EQ(settings().credentials.secret_key, "SCONFIG");
    EXPECT_EQ(settings().credentials.origin, (dir_ / "config").string() + " [default]");

    credentials(
        "[default]\naws_access_key_id = AKCREDS\naws_secret_access_key = SCREDS\n"
        "aws_session_token = TCREDS\n");
    AwsSettings s = settings();
    EXPECT_EQ(s.credentials.access_key, "AKCREDS");
    EXPECT_EQ(s.credentials.secret_key, "SCREDS");
    EXPECT_EQ(s.credentials.session_token, "TCREDS");
    EXPECT_EQ(s.credentials.origin, (dir_ / "credentials").string() + " [default]");

    // The environment needs both keys; one alone is not a pair and is passed over.
    env_["AWS_ACCESS_KEY_ID"] = "AKENV";
    EXPECT_EQ(settings().credentials.access_key, "AKCREDS");
    env_["AWS_SECRET_ACCESS_KEY"] = "SENV";
    s = settings();
    EXPECT_EQ(s.credentials.access_key, "AKENV");
    EXPECT_EQ(s.credentials.secret_key, "SENV");
    EXPECT_EQ(s.credentials.session_token, "");  // not the file's token with other keys
    EXPECT_EQ(s.credentials.origin, "the environment");
    env_["AWS_SESSION_TOKEN"] = "TENV";
    EXPECT_EQ(settings().credentials.session_token, "TENV");
}

TEST_F(AwsChain, AHalfPairInAFileIsPassedOver) {
    credentials("[default]\naws_access_key_id = AKONLY\n");
    config("[default]\naws_access_key_id = AKCONF\naws_secret_access_key = SCONF\n");
    AwsSettings s = settings();
    EXPECT_EQ(s.credentials.access_key, "AKCONF");
    EXPECT_EQ(s.credentials.secret_key, "SCONF");
}

TEST_F(AwsChain, ProfileByArgumentThenAwsProfile) {
    credentials(
        "[default]\naws_access_key_id = AKD\naws_secret_access_key = SD\n"
        "[team]\naws_access_key_id = AKT\naws_secret_access_key = ST\n"
        "[ci]\naws_access_key_id = AKC\naws_secret_access_key = SC\n");
    EXPECT_EQ(settings().credentials.access_key, "AKD");
    env_["AWS_PROFILE"] = "ci";
    EXPECT_EQ(settings().credentials.access_key, "AKC");
    EXPECT_EQ(settings().profile, "ci");
    AwsSettings s = settings("team");
    EXPECT_EQ(s.credentials.access_key, "AKT");
    EXPECT_EQ(s.profile, "team");
    EXPECT_EQ(s.credentials.origin, (dir_ / "credentials").string() + " [team]");
}

TEST_F(AwsChain, ConfigProfilesAreWrittenWithProfile) {
    config(
        "[team]\nregion = wrong-1\n"
        "[profile team]\nregion = eu-central-1\naws_access_key_id = AKT\n"
        "aws_secret_access_key = ST\n"
        "[profile default]\nregion = ap-south-1\n");
    AwsSettings s = settings("team");
    EXPECT_EQ(s.region, "eu-central-1");
    EXPECT_EQ(s.credentials.access_key, "AKT");
    EXPECT_EQ(s.credentials.origin, (dir_ / "config").string() + " [profile team]");
    // The default profile may be "[profile default]" in the config file too.
    EXPECT_EQ(settings().region, "ap-south-1");
}

TEST_F(AwsChain, AMissingProfileNamedExplicitlyIsAnError) {
    credentials("[default]\naws_access_key_id = AKD\naws_secret_access_key = SD\n");
    for (bool by_env : {false, true}) {
        if (by_env) env_["AWS_PROFILE"] = "nosuch";
        try {
            by_env ? settings() : settings("nosuch");
            ADD_FAILURE() << "a missing profile was accepted";
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::bad_input);
            std::string m = e.what();
            EXPECT_NE(m.find("'nosuch'"), std::string::npos) << m;
            EXPECT_NE(m.find((dir_ / "credentials").string()), std::string::npos) << m;
            EXPECT_NE(m.find((dir_ / "config").string()), std::string::npos) << m;
            EXPECT_NE(m.find(by_env ? "AWS_PROFILE" : "the remote"), std::string::npos) << m;
        }
    }
    // Even with keys in the environment: a profile that is not there is a mistake.
    env_["AWS_ACCESS_KEY_ID"] = "AK";
    env_["AWS_SECRET_ACCESS_KEY"] = "SK";
    EXPECT_THROW(settings(), StoreError);
    // The default profile missing is no error: it is only the default.
    env_.erase("AWS_PROFILE");
    EXPECT_NO_THROW(settings());
}

TEST_F(AwsChain, FilesDefaultToHomeAndTildeIsHome) {
    env_.clear();
    env_["HOME"] = dir_.path().string();
    std::filesystem::create_directories(dir_ / ".aws");
    write_text_file(dir_ / ".aws" / "credentials",
                    "[default]\naws_access_key_id = AKHOME\naws_secret_access_key = S\n");
    write_text_file(dir_ / ".aws" / "config", "[default]\nregion = sa-east-1\n");
    AwsSettings s = settings();
    EXPECT_EQ(s.credentials.access_key, "AKHOME");
    EXPECT_EQ(s.region, "sa-east-1");

    write_text_file(dir_ / "other",
                    "[x]\naws_access_key_id = AKTILDE\naws_secret_access_key = S\n");
    env_["AWS_SHARED_CREDENTIALS_FILE"] = "~/other";
    EXPECT_EQ(settings("x").credentials.access_key, "AKTILDE");

    // No HOME and no variables: no files are read (not the tester's own ~/.aws).
    env_.clear();
    EXPECT_EQ(settings().credentials.access_key, "");
}

TEST_F(AwsChain, RegionOrder) {
    fallback_.region = "fallback-1";
    EXPECT_EQ(settings().region, "fallback-1");
    config("[default]\nregion = config-1\n");
    EXPECT_EQ(settings().region, "config-1");
    env_["AWS_DEFAULT_REGION"] = "default-env-1";
    EXPECT_EQ(settings().region, "default-env-1");
    env_["AWS_REGION"] = "env-1";
    EXPECT_EQ(settings().region, "env-1");
    EXPECT_EQ(settings("", "explicit-1").region, "explicit-1");
    // An empty variable is an unset one; an empty fallback is us-east-1.
    env_["AWS_REGION"] = "";
    env_["AWS_DEFAULT_REGION"] = "";
    config("");
    fallback_.region = "";
    EXPECT_EQ(settings().region, "us-east-1");
}

TEST_F(AwsChain, EndpointOrder) {
    fallback_.endpoint = "http://fallback";
    EXPECT_EQ(settings().endpoint, "http://fallback");
    config("[default]\nendpoint_url = http://profile\n");
    EXPECT_EQ(settings().endpoint, "http://profile");
    // S3's own sub-section wins over the profile's general endpoint.
    config("[default]\nendpoint_url = http://profile\ns3 =\n  endpoint_url = http://profile-s3\n");
    EXPECT_EQ(settings().endpoint, "http://profile-s3");
    // A services section named by the profile, as the AWS CLI reads it.
    config(
        "[default]\nservices = local\ns3 =\n  endpoint_url = http://profile-s3\n"
        "[services local]\ns3 =\n  endpoint_url = http://services-s3\n");
    EXPECT_EQ(settings().endpoint, "http://services-s3");
    env_["AWS_ENDPOINT_URL"] = "http://env";
    EXPECT_EQ(settings().endpoint, "http://env");
    env_["AWS_ENDPOINT_URL_S3"] = "http://env-s3";
    EXPECT_EQ(settings().endpoint, "http://env-s3");
    EXPECT_EQ(settings("", "", "http://explicit").endpoint, "http://explicit");
}

}  // namespace
